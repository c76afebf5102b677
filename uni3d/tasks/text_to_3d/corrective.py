"""LMC-SDS's learned manifold corrective (Alldieck, Kolotouros, Sminchisescu, ECCV 2024, arXiv:2401.05293), built
from the paper's abstract (docs/text_to_3d.md says which parts are the paper's and which are uni3d's choices).

SDS's residual splits (in VE units, ``D_s = D_u + s (D_c - D_u)`` the guided teacher, ``D_c`` the prompt-conditioned
unguided one) into a guidance term and a projection term:

    (x0 - D_s) / sigma = (D_c - D_s) / sigma + (x0 - D_c) / sigma = (s - 1) (eps_c - eps_u) + (x0 - D_c) / sigma

The projection term pulls the render toward the denoiser's one-step estimate ``D_c``, which is a blurred,
timestep-dependent corruption of ``x0`` even for an image on the prior's manifold: the noisy part of the gradient,
which SDS drowns with a large guidance scale. LMC-SDS trains a shallow network ``k(x0, t)`` to mimic that corruption
and compares the corrupted render with the estimate instead, ``1/2 |k(x0, t) - sg(D_c)|^2``, whose gradient in
``x0`` is ``J_k^T (k(x0, t) - D_c)``. A shallow convolution can learn the timestep's blur but not the prior's
projection onto its manifold, so what it factors out is the frequency bias and what remains pulls toward the
manifold. ``k`` starts as the identity (its last layer is zero), where LMC-SDS is exactly SDS, and is trained
alongside the field on the step's own pairs ``(sg(x0), sg(D_c))``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from uni3d.diffusion.units import classifier_free_guidance

if TYPE_CHECKING:  # diffusers: imported when a run starts
    from uni3d.models.stable_diffusion import StableDiffusionPrior

CORRECTIVE_WIDTH = 32
"""Channels of the corrective's two hidden convolutions."""
CORRECTIVE_LR = 1e-3
"""Adam's learning rate for the corrective."""


class ManifoldCorrective(nn.Module):
    """``k(x, sigma) = x + f(x, log sigma)``: three 3x3 convolutions (the middle ones modulated by the noise level,
    FiLM), the last zero-initialised so that ``k`` starts as the identity."""

    def __init__(self, channels: int, width: int = CORRECTIVE_WIDTH) -> None:
        super().__init__()
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.mid = nn.Conv2d(width, width, 3, padding=1)
        self.out = nn.Conv2d(width, channels, 3, padding=1)
        self.film = nn.Sequential(nn.Linear(1, width), nn.SiLU(), nn.Linear(width, 4 * width))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``k(x, sigma)`` for ``x (B, C, h, w)`` and ``sigma (B,)``."""
        scale1, shift1, scale2, shift2 = self.film(sigma.log().view(-1, 1).to(x.dtype)).chunk(4, dim=1)
        h = F.silu(self.inp(x) * (1 + scale1[..., None, None]) + shift1[..., None, None])
        h = F.silu(self.mid(h) * (1 + scale2[..., None, None]) + shift2[..., None, None])
        return x + self.out(h)


def corrective_loss(corrective: ManifoldCorrective, x0: Tensor, sigma: Tensor, *, estimate: Tensor) -> Tensor:
    """The corrective's training loss ``mean |k(sg(x0), sigma) - sg(D_c)|^2`` on one step's pairs."""
    return (corrective(x0.detach(), sigma) - estimate.detach()).square().mean()


def lmc_target(
    corrective: Callable[[Tensor, Tensor], Tensor], x0: Tensor, sigma: Tensor, *, d_cond: Tensor, d_guided: Tensor
) -> Tensor:
    """LMC-SDS's effective ``d_real = x0 - (D_c - D_s) - J_k^T (k(x0, sigma) - D_c)`` (``d_cond``: ``D_c``,
    ``d_guided``: ``D_s``, both at the step's ``x_t``), so that the ``sds`` form's residual
    ``(x0 - d_real) / sigma`` is ``(s - 1) (eps_c - eps_u) + J_k^T (k(x0, sigma) - D_c) / sigma``; with ``k`` the
    identity it is ``D_s``, SDS's (``corrective``: ``k``, any differentiable map). No gradient reaches ``x0`` or
    ``k``'s weights."""
    with torch.enable_grad():
        x = x0.detach().requires_grad_(True)
        k = corrective(x, sigma)
        (pull,) = torch.autograd.grad(k, x, grad_outputs=(k - d_cond).detach())
    return (x0.detach() - (d_cond - d_guided) - pull).detach()


def lmc_denoise(
    prior: StableDiffusionPrior,
    corrective: ManifoldCorrective,
    x0: Tensor,
    *,
    x_t: Tensor,
    sigma: Tensor,
    conditions: tuple[Tensor, Tensor],
    guidance: float,
) -> tuple[Tensor, Tensor]:
    """One LMC-SDS teacher pass at ``x_t``: ``(d_real, D_c)``, the :func:`lmc_target` the ``sds`` form distils and
    the prompt-conditioned estimate the corrective then trains on (``conditions``: the prompt's and the negative
    prompt's embeddings; one UNet batch of both, no gradient)."""
    n = len(x_t)
    with torch.no_grad():
        both = prior.denoise(x_t.detach().repeat(2, 1, 1, 1), sigma.repeat(2), torch.cat(conditions))
    d_cond, d_uncond = both[:n], both[n:]
    d_guided = classifier_free_guidance(d_uncond, d_cond, guidance)
    return lmc_target(corrective, x0, sigma, d_cond=d_cond, d_guided=d_guided), d_cond
