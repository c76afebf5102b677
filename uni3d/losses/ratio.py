"""Density ratio ``r = q_t / p_t`` from a discriminator logit (METHOD.md section 5)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class RatioEstimate:
    """Per-sample ``log r`` (detached, clamped) and how many samples needed repair.

    ``n_clamped`` logits fell outside ``[-clamp, clamp]``; ``n_nonfinite`` were NaN/inf and were set to
    ``log r = 0`` (``r = 1``, the ratio-free weighting). Both are reported by the pipelines, never hidden.
    """

    log_r: Tensor
    n_clamped: int
    n_nonfinite: int
    moves: Tensor
    """Bool ``[B]``: ``log r`` is the head's own (finite, unclamped) estimate, so it moves with ``x_t``."""

    @property
    def r(self) -> Tensor:
        return self.log_r.exp()

    @classmethod
    def exact(cls, log_r: Tensor) -> RatioEstimate:
        """A known ``log r`` (closed form, a test): every sample moves with ``x_t``, none was repaired."""
        log_r = log_r.detach()
        return cls(log_r, 0, 0, torch.ones(log_r.shape[0], dtype=torch.bool, device=log_r.device))

    def held_constant(self) -> RatioEstimate:
        """The same ``log r`` with no sample moving: the expanded form then gives ``h(r)`` times the ``f = -log``
        (uni-rkl) gradient per sample, the exact gradient of ``w E[h(sg r) ||y||^2]`` (METHOD.md section 4)."""
        return replace(self, moves=torch.zeros_like(self.moves))

    def count_into(self, counters: Any) -> None:
        """Add this batch to a pipeline's ``ratio_clamped`` / ``ratio_nonfinite`` / ``ratio_evaluations`` counters."""
        counters.ratio_clamped += self.n_clamped
        counters.ratio_nonfinite += self.n_nonfinite
        counters.ratio_evaluations += self.log_r.shape[0]


def ratio_from_logits(logits: Tensor, clamp: float = 5.0) -> RatioEstimate:
    """``log r = clamp(logit)``: at the optimum of :func:`discriminator_loss` the logit is ``log(q/p)``."""
    logits = logits.detach().float().flatten()
    finite = torch.isfinite(logits)
    safe = torch.where(finite, logits, torch.zeros_like(logits))
    inside = finite & (safe.abs() <= clamp)
    n_clamped = int((finite & ~inside).sum())
    return RatioEstimate(safe.clamp(-clamp, clamp), n_clamped, int((~finite).sum()), inside)


def discriminator_loss(logit_real: Tensor, logit_fake: Tensor) -> Tensor:
    """Balanced BCE: ``E_q[softplus(-l)] + E_p[softplus(l)]`` (real = teacher/data, fake = generator).

    Each side is averaged on its own, so unequal batch sizes stay balanced; the minimiser is
    ``l = log(q / p)``.
    """
    return F.softplus(-logit_real.float()).mean() + F.softplus(logit_fake.float()).mean()
