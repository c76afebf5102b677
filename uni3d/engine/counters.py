"""What a distillation run repaired or skipped, reported in its metrics (nothing is dropped silently)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

NonFinitePolicy = Literal["skip", "rollback"]
"""``skip``: a non-finite update is counted and not applied; ``rollback``: every trained tensor returns to the
last snapshot and the step is drawn again."""


class NonFiniteError(RuntimeError):
    """Training kept producing non-finite values after the allowed number of rollbacks."""


@dataclass
class Counters:
    """Skipped updates, rollbacks and ratio repairs of one run."""

    skipped_generator_steps: int = 0
    """Generator updates whose loss or gradient norm was non-finite (``skip`` policy): counted, not applied."""
    skipped_fake_steps: int = 0
    skipped_ratio_steps: int = 0
    rollbacks: int = 0
    nonfinite_steps: list[int] = field(default_factory=list)
    """The (1-based) steps whose loss or gradient was non-finite under the ``rollback`` policy."""
    ratio_clamped: int = 0
    """Per-sample ratio logits outside ``[-clamp, clamp]`` (clamped)."""
    ratio_nonfinite: int = 0
    """Per-sample ratio logits that were NaN/inf (set to ``r = 1``)."""
    ratio_evaluations: int = 0

    def report(self, policy: NonFinitePolicy) -> dict[str, Any]:
        """The counters that ``policy`` can change, with the ratio counters (the keys a run's metrics carry)."""
        skipped = ("skipped_generator_steps", "skipped_fake_steps", "skipped_ratio_steps")
        dropped = ("rollbacks", "nonfinite_steps") if policy == "skip" else skipped
        return {k: v for k, v in asdict(self).items() if k not in dropped}

    @classmethod
    def restore(cls, saved: dict[str, Any]) -> Counters:
        """Counters from a checkpoint's :meth:`report` (or ``asdict``); keys it lacks start at zero."""
        return cls(**{k: list(v) if isinstance(v, list) else v for k, v in saved.items()})
