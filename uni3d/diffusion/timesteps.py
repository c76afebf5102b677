"""Timestep-range annealing for score distillation.

DreamFusion samples ``t ~ U(0.02, 0.98) T``; ProlificDreamer (section 4.2) and threestudio lower the upper end
as the optimization proceeds (large ``t`` shapes the coarse geometry early, small ``t`` refines detail later).
Here the upper end moves linearly in the run's progress ``p in [0, 1]``:
``t_max(p) = t_max_start + (t_max_end - t_max_start) min(p / anneal_until, 1)``, and ``t ~ U[t_min, t_max(p)] T``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from uni3d.errors import UsageError


@dataclass(frozen=True)
class TimestepRange:
    """Fractions of the ``T`` training timesteps; ``anneal_until`` is the progress at which ``t_max`` settles."""

    t_min: float = 0.02
    t_max_start: float = 0.98
    t_max_end: float = 0.5
    anneal_until: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.t_min < min(self.t_max_start, self.t_max_end) <= max(self.t_max_start, self.t_max_end) <= 1:
            raise UsageError(
                f"timestep range needs 0 <= t_min < t_max_start, t_max_end <= 1; got t_min={self.t_min}, "
                f"t_max_start={self.t_max_start}, t_max_end={self.t_max_end}"
            )
        if not 0 < self.anneal_until <= 1:
            raise UsageError(f"anneal_until must be in (0, 1], got {self.anneal_until}")

    def bounds(self, progress: float) -> tuple[float, float]:
        """``(t_min, t_max(p))`` as fractions of ``T``; ``progress`` is clamped to ``[0, 1]``."""
        ramp = min(max(progress, 0.0) / self.anneal_until, 1.0)
        return self.t_min, self.t_max_start + (self.t_max_end - self.t_max_start) * ramp

    def sample(
        self, batch: int, progress: float, num_train_timesteps: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``batch`` integer timesteps uniform on ``[t_min T, t_max(p) T]`` (both ends included), ``(batch,)``."""
        lo, hi = self.bounds(progress)
        last = num_train_timesteps - 1
        t_lo, t_hi = round(lo * last), round(hi * last)
        return torch.randint(t_lo, t_hi + 1, (batch,), generator=generator)
