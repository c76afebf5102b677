"""Timestep schedules for score distillation.

``uniform`` (DreamFusion, ProlificDreamer section 4.2, threestudio): ``t ~ U[t_min, t_max(p)] T``, the upper end
moving linearly in the run's progress ``p in [0, 1]``:
``t_max(p) = t_max_start + (t_max_end - t_max_start) min(p / anneal_until, 1)`` (large ``t`` shapes the coarse
geometry early, small ``t`` refines detail later).

``descending`` (DreamTime's time-prioritized schedule, Huang et al. 2023): ``t`` itself falls with progress, as a
sampler's does, ``t = clip(c(p) + jitter n, t_min, t_max_start)`` with ``n ~ N(0, 1)`` and the centre
``c(p) = t_max_start + (t_min - t_max_start) p`` over the whole run. With a fixed noise per particle (the
text-to-3D ``noise="seeded"`` setting) a particle then follows the path of its own seed from coarse to fine, as a
DDIM sample follows its starting noise (Diverse Score Distillation's idea).
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

import torch

from uni3d.errors import UsageError

SCHEDULES = ("uniform", "descending")


@dataclass(frozen=True)
class TimestepRange:
    """Fractions of the ``T`` training timesteps; ``anneal_until`` is the progress at which the uniform range
    settles."""

    t_min: float = 0.02
    t_max_start: float = 0.98
    t_max_end: float = 0.5
    anneal_until: float = 0.5
    _: KW_ONLY
    schedule: str = "uniform"
    jitter: float = 0.05

    def __post_init__(self) -> None:
        if not 0 <= self.t_min < min(self.t_max_start, self.t_max_end) <= max(self.t_max_start, self.t_max_end) <= 1:
            raise UsageError(
                f"timestep range needs 0 <= t_min < t_max_start, t_max_end <= 1; got t_min={self.t_min}, "
                f"t_max_start={self.t_max_start}, t_max_end={self.t_max_end}"
            )
        if not 0 < self.anneal_until <= 1:
            raise UsageError(f"anneal_until must be in (0, 1], got {self.anneal_until}")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"unknown timestep schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if not 0 <= self.jitter <= 1:
            raise UsageError(f"timestep jitter must be in [0, 1], got {self.jitter}")

    def _ramp(self, progress: float) -> float:
        return min(max(progress, 0.0) / self.anneal_until, 1.0)

    def centre(self, progress: float) -> float:
        """The ``descending`` schedule's ``c(p)``, as a fraction of ``T``."""
        return self.t_max_start + (self.t_min - self.t_max_start) * min(max(progress, 0.0), 1.0)

    def bounds(self, progress: float) -> tuple[float, float]:
        """``(lowest, highest)`` ``t`` at ``progress`` (clamped to ``[0, 1]``) as fractions of ``T``: the uniform
        range, or the descending centre plus and minus two jitters (clipped)."""
        if self.schedule == "descending":
            c = self.centre(progress)
            return max(self.t_min, c - 2 * self.jitter), min(self.t_max_start, c + 2 * self.jitter)
        return self.t_min, self.t_max_start + (self.t_max_end - self.t_max_start) * self._ramp(progress)

    def sample(
        self, batch: int, progress: float, num_train_timesteps: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``batch`` integer timesteps of the schedule at ``progress``, ``(batch,)``: uniform on
        ``[t_min T, t_max(p) T]`` (both ends included), or rounded from the jittered descending centre."""
        last = num_train_timesteps - 1
        if self.schedule == "descending":
            n = torch.randn(batch, generator=generator)
            t = (self.centre(progress) + self.jitter * n).clamp(self.t_min, self.t_max_start)
            return (t * last).round().long()
        lo, hi = self.bounds(progress)
        t_lo, t_hi = round(lo * last), round(hi * last)
        return torch.randint(t_lo, t_hi + 1, (batch,), generator=generator)
