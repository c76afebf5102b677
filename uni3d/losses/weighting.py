"""Time weightings ``w(t)`` of the generator loss (METHOD.md sections 3-4).

A weighting is stated in data units: the multiplier of the loss written with denoiser differences
(``D_p - D_q`` for the integral form, products of two such differences for the expanded and SiD
forms). The loss functions work in score units, so :func:`score_weight` converts with
``w_score = w_data * sigma^(2k)``, ``k = 1`` (integral) or ``2`` (expanded, SiD).

- ``score``: ``w_score = 1``; the weighting under which the check of section 6 is exact.
- ``data``: ``w_data = 1``; the gradient is ``D_p - D_q`` (Diff-Instruct, DMD without normalisation).
- ``sds``: ``w_data = sigma / (1 + sigma^2)``: DreamFusion's ``w(t) = 1 - alpha_bar_t`` on ``eps_hat - eps``
  rewritten in VE units (``eps_hat - eps = (x0 - D_q) / sigma``, ``1 - alpha_bar = sigma^2 / (1 + sigma^2)``).
- ``sid``: ``w_data = 1 / mean|x0 - D_q|`` per sample (SiD / DMD normalisation), computed without gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from uni3d.errors import UsageError
from uni3d.losses._tensors import compute_dtype, per_sample

WEIGHTINGS: tuple[str, ...] = ("score", "data", "sds", "sid")
SID_EPS = 1e-8
"""Floor on ``mean|x0 - D_q|`` so a perfect teacher prediction cannot divide by zero."""


def data_weight(name: str, sigma: Tensor, x0: Tensor, d_real: Tensor, order: int) -> Tensor:
    """``w_data`` per sample ``[B]`` for weighting ``name`` (see the module docstring)."""
    dt = compute_dtype(x0)
    s = per_sample(sigma, x0).flatten().detach()
    if name == "score":
        return s.pow(-2 * order)
    if name == "data":
        return torch.ones_like(s)
    if name == "sds":
        return s / (1 + s.pow(2))
    if name == "sid":
        gap = (x0.detach().to(dt) - d_real.detach().to(dt)).abs().flatten(1).mean(1)
        return 1.0 / gap.clamp_min(SID_EPS)
    raise UsageError(f"unknown weighting {name!r}; valid: {', '.join(WEIGHTINGS)}")


def score_weight(name: str, sigma: Tensor, x0: Tensor, d_real: Tensor, order: int) -> Tensor:
    """``w_score = w_data * sigma^(2 order)`` ``[B]``: the ``weight`` argument of the loss forms."""
    s = per_sample(sigma, x0).flatten().detach()
    if name == "score":
        return torch.ones_like(s)
    return data_weight(name, sigma, x0, d_real, order) * s.pow(2 * order)
