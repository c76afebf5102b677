"""DDIM's deterministic update (Song et al. 2021, eq. 12 with ``eta = 0``) in VE units, down and up the noise levels.

In VE units (``x_sigma = x0 + sigma n``) the DDIM update from ``sigma`` to ``sigma'`` is the Euler step of the
probability-flow ODE ``dx / dsigma = (x - D(x; sigma)) / sigma`` (Karras et al. 2022, section 3):
``x' = x + (sigma' - sigma) (x - D(x; sigma)) / sigma``. Run downwards it samples (the path of a starting noise,
Diverse Score Distillation); run upwards from a clean ``x0`` it inverts (the noise a render "came from", Score
Distillation via Inversion). A denoiser is any ``D(x, sigma) -> x0 estimate`` with ``sigma`` of shape ``[B]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from uni3d.diffusion.edm import Denoiser
from uni3d.errors import UsageError


def epsilon(denoiser: Denoiser, x: Tensor, sigma: Tensor) -> Tensor:
    """The noise estimate ``(x - D(x; sigma)) / sigma`` (``sigma (B,)``)."""
    return (x - denoiser(x, sigma)) / sigma.view(-1, 1, 1, 1)


def geometric_levels(start: Tensor, end: Tensor, steps: int) -> Tensor:
    """``steps + 1`` levels ``(steps + 1, B)`` from ``start`` to ``end`` (both ``(B,)``, positive), evenly spaced in
    ``log sigma``, as the ODE's curvature is spread over ``log sigma`` rather than ``sigma``."""
    if steps < 1:
        raise UsageError(f"DDIM needs at least one step, got {steps}")
    frac = torch.linspace(0, 1, steps + 1, device=start.device, dtype=torch.float64).view(-1, 1)
    return (start.double().log() * (1 - frac) + end.double().log() * frac).exp().to(start.dtype)


@torch.no_grad()
def ddim_path(denoiser: Denoiser, noise: Tensor, sigma_to: Tensor, *, sigma_max: float, steps: int) -> Tensor:
    """The DDIM path of the starting ``noise`` (``x = sigma_max noise``) at ``sigma_to (B,)``: ``steps`` updates
    downwards, levels evenly spaced in ``log sigma``."""
    start = torch.full_like(sigma_to, sigma_max)
    levels = geometric_levels(start, sigma_to.clamp(max=sigma_max), steps)
    x = sigma_max * noise
    for sigma, nxt in zip(levels[:-1], levels[1:], strict=True):
        x = x + (nxt - sigma).view(-1, 1, 1, 1) * epsilon(denoiser, x, sigma)
    return x


@torch.no_grad()
def ddim_invert(
    denoiser: Denoiser,
    x0: Tensor,
    sigma_to: Tensor,
    *,
    sigma_min: float,
    steps: int,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``x0`` carried up to ``sigma_to (B,)`` by ``steps`` DDIM updates, from ``sigma_min`` (the first update reads
    ``D`` at the cleanest level on ``x0`` itself). With ``eta > 0`` each update also adds ``eta`` times the forward
    process's own noise between its two levels, ``eta sqrt(sigma'^2 - sigma^2) z`` (the stochastic inversion of
    Score Distillation via Inversion, which keeps the inverted noise closer to Gaussian)."""
    start = torch.full_like(sigma_to, sigma_min)
    levels = geometric_levels(start, sigma_to.clamp(min=sigma_min), steps)
    x = x0.detach()
    for sigma, nxt in zip(levels[:-1], levels[1:], strict=True):
        x = x + (nxt - sigma).view(-1, 1, 1, 1) * epsilon(denoiser, x, sigma)
        if eta > 0:
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + eta * (nxt.square() - sigma.square()).clamp(min=0).sqrt().view(-1, 1, 1, 1) * z
    return x
