"""The one distillation loop that the toy, the image distiller and text to 3D run on (METHOD.md section 7).

A task supplies what differs (how ``x0`` is drawn with gradient, the teacher and fake-score evaluations, the
fake-score and ratio-head losses); :class:`DistillationLoop` owns what is shared: the order of the fake-score,
ratio-head and generator updates, warm-up, the ratio estimate and its counters, the non-finite policy (skip an
update or roll every trained tensor back), the generator's EMA and the training state that checkpoints keep.
"""

from uni3d.engine.counters import Counters, NonFiniteError
from uni3d.engine.loop import (
    STAGE,
    Denoised,
    DistillationLoop,
    DistillationTask,
    Draw,
    LoopSettings,
    Part,
    StepResult,
)

__all__ = [
    "STAGE",
    "Counters",
    "Denoised",
    "DistillationLoop",
    "DistillationTask",
    "Draw",
    "LoopSettings",
    "NonFiniteError",
    "Part",
    "StepResult",
]
