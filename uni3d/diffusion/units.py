"""The one table of noise-schedule and prediction-unit conversions (METHOD.md section 1).

VP (Stable Diffusion, DDPM): ``x_vp = alpha x0 + sigma_vp eps`` with ``alpha^2 + sigma_vp^2 = 1``
(``alpha = sqrt(alpha_bar_t)``). VE (EDM, the loss module): ``x_ve = x0 + sigma n``. The two are the same
process up to scale: ``x_ve = x_vp / alpha``, ``sigma = sigma_vp / alpha``.

| network predicts | denoiser ``D`` (x0 estimate) from ``x_vp``          |
|------------------|-----------------------------------------------------|
| ``eps``          | ``(x_vp - sigma_vp eps_hat) / alpha``               |
| ``x0`` (sample)  | ``x0_hat``                                          |
| ``v``            | ``alpha x_vp - sigma_vp v_hat`` (``v = alpha eps - sigma_vp x0``) |

Scores: ``s_ve(x_ve) = (D - x_ve) / sigma^2``; the VP marginal's score is ``-eps_hat / sigma_vp``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from uni3d.errors import UsageError

Prediction = Literal["eps", "x0", "v"]
PREDICTIONS: tuple[str, ...] = ("eps", "x0", "v")


def ve_sigma(alpha_bar: Tensor) -> Tensor:
    """VE noise level of a VP step: ``sigma = sqrt((1 - alpha_bar) / alpha_bar)``."""
    return ((1 - alpha_bar) / alpha_bar).sqrt()


def vp_coefficients(sigma: Tensor) -> tuple[Tensor, Tensor]:
    """``(alpha, sigma_vp)`` of the VP step with VE noise level ``sigma``: ``alpha = 1 / sqrt(1 + sigma^2)``."""
    alpha = (1 + sigma.pow(2)).rsqrt()
    return alpha, sigma * alpha


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape(-1, *([1] * (like.ndim - 1))) if v.ndim == 1 else v


def denoiser_from_prediction(pred: Tensor, x_vp: Tensor, sigma: Tensor, kind: Prediction) -> Tensor:
    """The x0 estimate ``D`` from a VP network's output ``pred`` at VE level ``sigma`` (table above)."""
    alpha, sigma_vp = (_bcast(c, x_vp) for c in vp_coefficients(sigma))
    if kind == "eps":
        return (x_vp - sigma_vp * pred) / alpha
    if kind == "x0":
        return pred
    if kind == "v":
        return alpha * x_vp - sigma_vp * pred
    raise UsageError(f"unknown prediction type {kind!r}; valid: {', '.join(PREDICTIONS)}")


def prediction_from_denoiser(d: Tensor, x_vp: Tensor, sigma: Tensor, kind: Prediction) -> Tensor:
    """Inverse of :func:`denoiser_from_prediction`: what a ``kind`` network would output for denoiser ``d``."""
    alpha, sigma_vp = (_bcast(c, x_vp) for c in vp_coefficients(sigma))
    if kind == "eps":
        return (x_vp - alpha * d) / sigma_vp
    if kind == "x0":
        return d
    if kind == "v":
        return (alpha * x_vp - d) / sigma_vp
    raise UsageError(f"unknown prediction type {kind!r}; valid: {', '.join(PREDICTIONS)}")


def score_from_denoiser(d: Tensor, x_ve: Tensor, sigma: Tensor) -> Tensor:
    """Tweedie: ``grad log p_sigma(x_ve) = (D - x_ve) / sigma^2``."""
    return (d - x_ve) / _bcast(sigma, x_ve).pow(2)


def classifier_free_guidance(uncond: Tensor, cond: Tensor, scale: float | Tensor) -> Tensor:
    """The one CFG formula: ``uncond + scale (cond - uncond)`` (any unit: eps, x0, v or denoiser, all linear)."""
    return torch.lerp(uncond, cond, torch.as_tensor(scale, dtype=cond.dtype, device=cond.device))
