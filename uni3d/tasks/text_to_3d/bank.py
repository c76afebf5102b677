"""The "real" side of the density-ratio head in 3D (METHOD.md section 5): 3D has no data, so a small bank of
teacher samples per prompt is drawn once at the start of a run and kept in its checkpoints.

Each sample has its own random camera from the run's camera sampler and the prompt with that camera's view words
(:mod:`uni3d.models.views`), and is drawn by EDM's deterministic Heun sampler (:func:`uni3d.diffusion.edm.heun_sample`)
on the prior's guided denoiser, from the prior's largest noise level.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from uni3d.diffusion.edm import heun_sample
from uni3d.models.stable_diffusion import StableDiffusionPrior
from uni3d.scene.cameras import Cameras, CameraSampler
from uni3d.tasks.text_to_3d.config import GenerateConfig


@dataclass
class TeacherBank:
    """``latents (N, 4, h, w)`` in SD latent units and the cameras they were drawn for: ``c2w (N, 4, 4)`` and
    ``fov_y (N,)`` in radians."""

    latents: Tensor
    c2w: Tensor
    fov_y: Tensor

    def __len__(self) -> int:
        return len(self.latents)

    def cameras(self, idx: Tensor) -> Cameras:
        """The cameras of samples ``idx`` (their image size is not kept: 1 x 1)."""
        return Cameras(self.c2w[idx], self.fov_y[idx], 1, 1)

    @classmethod
    def from_state(cls, state: dict[str, Tensor], fov_y: float) -> TeacherBank:
        """The bank of a checkpoint; one saved before the bank kept its fields of view (it kept angles) gets
        ``fov_y`` (radians) for every sample."""
        if "fov_y" in state:
            return cls(**state)
        return cls(state["latents"], state["c2w"], torch.full((len(state["latents"]),), fov_y).to(state["c2w"]))


@torch.no_grad()
def draw_bank(
    prior: StableDiffusionPrior,
    cfg: GenerateConfig,
    sampler: CameraSampler,
    *,
    size: int,
) -> TeacherBank:
    """``cfg.bank_size`` teacher samples (one batch, ``cfg.bank_nfe`` Heun steps) of the prior's latent shape for
    ``cfg``'s prompt with its classifier-free guidance and view words, at cameras drawn by ``sampler`` at ``size``."""
    unet = prior.unet.config
    latent_shape = (int(unet.in_channels), int(unet.sample_size), int(unet.sample_size))
    n, prompt, negative_prompt, guidance_scale = cfg.bank_size, cfg.prompt, cfg.negative_prompt, cfg.guidance_scale
    nfe, view_dependent = cfg.bank_nfe, cfg.view_dependent
    device = prior.log_sigmas.device
    cams = sampler.sample(n, size)
    cond, uncond = prior.view_conditions(prompt, cams, negative_prompt, view_dependent)
    noise = torch.randn(n, *latent_shape).to(device)
    sigma_max = float(prior.sigma_at(torch.tensor([prior.num_train_timesteps - 1.0])))

    def denoiser(x: Tensor, sigma: Tensor) -> Tensor:
        return prior.denoise(x, sigma, cond, uncond, guidance_scale)

    latents = heun_sample(denoiser, noise, nfe, sigma_max=sigma_max)
    return TeacherBank(latents, cams.c2w.to(device), cams.fov_y.to(device))
