"""An affine map from colour to a prior's latents, fitted once per prior, so that a first stage can render straight
into latent space (Latent-NeRF, Metzer et al., CVPR 2023) with the same RGB field and no VAE encoder.

Latent-NeRF renders four latent channels from its field; uni3d keeps one RGB field for the whole run, so its latent
stage renders colour at the latent side and maps each pixel with ``z = W rgb + b``. A VAE's latents are close to
such a map of the local mean colour (the decoder's linear preview of SD latents is the same observation the other
way round); :func:`fit_latent_map` fits ``W (C, 3)`` and ``b (C,)`` by least squares on images the step's renders
resemble (flat-coloured regions with sharp edges, and smooth colour fields), encoded by the prior's own VAE, and
reports the share of the latents' variance the map explains.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.nn import functional as F

if TYPE_CHECKING:
    from uni3d.models.stable_diffusion import StableDiffusionPrior

FIT_IMAGES = 16
"""Images the map is fitted on (half flat-coloured blocks, half smooth fields)."""
FIT_BATCH = 4
"""Images per VAE encode while fitting."""


@dataclass(frozen=True, eq=False)
class LatentMap:
    """``z = W rgb + b`` per latent pixel; ``r2``: the share of the fitting latents' variance it explains."""

    weight: Tensor
    bias: Tensor
    r2: float

    def __call__(self, rgb: Tensor) -> Tensor:
        """Latents ``(B, C, h, w)`` of colours ``rgb (B, 3, h, w)`` in ``[0, 1]`` at the latent side; differentiable."""
        weight, bias = self.weight.to(rgb.device), self.bias.to(rgb.device)
        return torch.einsum("oc,bchw->bohw", weight, rgb) + bias.view(1, -1, 1, 1)


_FITTED: weakref.WeakKeyDictionary[StableDiffusionPrior, LatentMap] = weakref.WeakKeyDictionary()


def _fitting_images(side: int, *, seed: int) -> Tensor:
    """``(FIT_IMAGES, 3, side, side)`` in ``[0, 1]``: random 4x4 colour blocks, then bilinear colour fields."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(FIT_IMAGES, 3, 4, 4, generator=gen)
    half = FIT_IMAGES // 2
    blocks = F.interpolate(coarse[:half], size=(side, side), mode="nearest")
    smooth = F.interpolate(coarse[half:], size=(side, side), mode="bilinear", align_corners=False)
    return torch.cat([blocks, smooth])


@torch.no_grad()
def fit_latent_map(prior: StableDiffusionPrior, *, seed: int = 0) -> LatentMap:
    """The prior's :class:`LatentMap` (fitted on first use, then kept for the prior's lifetime): least squares of
    the VAE's latents on the colour averaged over each latent pixel's footprint."""
    if prior in _FITTED:
        return _FITTED[prior]
    latent = int(prior.unet.config.sample_size)
    factor = 2 ** (len(prior.vae.config.block_out_channels) - 1)
    device = prior.log_sigmas.device
    images = _fitting_images(latent * factor, seed=seed)
    latents = torch.cat([prior.encode(chunk.to(device)).cpu() for chunk in images.split(FIT_BATCH)]).double()
    colours = F.avg_pool2d(images, factor).double()
    x = torch.cat([colours, torch.ones_like(colours[:, :1])], 1).permute(0, 2, 3, 1).reshape(-1, 4)
    y = latents.permute(0, 2, 3, 1).reshape(len(x), -1)
    solution = torch.linalg.lstsq(x, y).solution  # (4, C): three colour rows, then the bias
    residual = (y - x @ solution).square().sum()
    r2 = float(1 - residual / (y - y.mean(0)).square().sum())
    fitted = LatentMap(solution[:3].T.float().to(device), solution[3].float().to(device), r2)
    _FITTED[prior] = fitted
    return fitted
