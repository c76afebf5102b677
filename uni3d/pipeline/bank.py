"""The "real" side of the density-ratio head in 3D (METHOD.md section 5): 3D has no data, so a small bank of
teacher samples per prompt is drawn once at the start of a run and kept in its checkpoints.

Each sample has its own random camera from the run's camera sampler and the view-suffixed prompt of that camera
(:mod:`uni3d.prior.views`), and is drawn by EDM's deterministic Heun sampler (:func:`uni3d.diffusion.edm.heun_sample`)
on the prior's guided denoiser, from the prior's largest noise level.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from uni3d.diffusion.edm import heun_sample
from uni3d.prior.stable_diffusion import StableDiffusionPrior
from uni3d.prior.views import camera_angles
from uni3d.scene.cameras import CameraSampler


@dataclass
class TeacherBank:
    """``latents (N, 4, h, w)`` in SD latent units, the ``c2w (N, 4, 4)`` of the views they were drawn for and
    those views' ``elevation``, ``azimuth`` ``(N,)`` in degrees."""

    latents: Tensor
    c2w: Tensor
    elevation: Tensor
    azimuth: Tensor

    def __len__(self) -> int:
        return len(self.latents)


@torch.no_grad()
def draw_bank(
    prior: StableDiffusionPrior,
    prompt: str,
    negative_prompt: str,
    sampler: CameraSampler,
    size: int,
    latent_shape: tuple[int, int, int],
    n: int,
    nfe: int,
    guidance_scale: float,
    view_dependent: bool,
) -> TeacherBank:
    """``n`` teacher samples (one batch) of ``latent_shape (C, h, w)`` with classifier-free guidance."""
    device = prior.log_sigmas.device
    cams = sampler.sample(n, size)
    elevation, azimuth = camera_angles(cams)
    cond, uncond = prior.view_conditions(prompt, elevation, azimuth, negative_prompt, view_dependent)
    noise = torch.randn(n, *latent_shape).to(device)
    sigma_max = float(prior.sigma_at(torch.tensor([prior.num_train_timesteps - 1.0])))

    def denoiser(x: Tensor, sigma: Tensor) -> Tensor:
        return prior.denoise(x, sigma, cond, uncond, guidance_scale)

    latents = heun_sample(denoiser, noise, nfe, sigma_max=sigma_max)
    return TeacherBank(latents, cams.c2w.to(device), elevation.to(device), azimuth.to(device))
