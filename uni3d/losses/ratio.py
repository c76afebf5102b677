"""Density ratio ``r = q_t / p_t`` from a discriminator logit (METHOD.md section 5)."""

from __future__ import annotations

from dataclasses import dataclass

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

    @property
    def r(self) -> Tensor:
        return self.log_r.exp()


def ratio_from_logits(logits: Tensor, clamp: float = 5.0) -> RatioEstimate:
    """``log r = clamp(logit)``: at the optimum of :func:`discriminator_loss` the logit is ``log(q/p)``."""
    logits = logits.detach().float().flatten()
    finite = torch.isfinite(logits)
    safe = torch.where(finite, logits, torch.zeros_like(logits))
    n_clamped = int((finite & (safe.abs() > clamp)).sum())
    return RatioEstimate(safe.clamp(-clamp, clamp), n_clamped, int((~finite).sum()))


def discriminator_loss(logit_real: Tensor, logit_fake: Tensor) -> Tensor:
    """Balanced BCE: ``E_q[softplus(-l)] + E_p[softplus(l)]`` (real = teacher/data, fake = generator).

    Each side is averaged on its own, so unequal batch sizes stay balanced; the minimiser is
    ``l = log(q / p)``.
    """
    return F.softplus(-logit_real.float()).mean() + F.softplus(logit_fake.float()).mean()


def generator_gan_loss(logit_fake: Tensor) -> Tensor:
    """Optional GAN term on the generator, non-saturating: ``softplus(-l(x_fake))`` per sample ``[B]``."""
    return F.softplus(-logit_fake.float().flatten(1).mean(1))
