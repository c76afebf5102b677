"""Sampling a prior pipeline: a diffusers Stable Diffusion pipeline rebuilt from its parts, sampled with DDIM."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, SchedulerMixin, StableDiffusionPipeline
from torch import Tensor, nn


def with_parts(pipe: StableDiffusionPipeline, **replace: nn.Module | SchedulerMixin) -> StableDiffusionPipeline:
    """``pipe``'s VAE, text encoder, tokenizer, UNet and scheduler with some replaced; no safety checker."""
    parts = {name: getattr(pipe, name) for name in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")}
    return StableDiffusionPipeline(
        **{**parts, **replace}, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )


def sample_images(
    pipe: StableDiffusionPipeline, prompts: list[str], steps: int, guidance_scale: float, seed: int
) -> Tensor:
    """Images ``(B, 3, H, W)`` in ``[0, 1]`` from the diffusers pipeline with DDIM (Song et al. 2021)."""
    sampler = with_parts(pipe, scheduler=DDIMScheduler.from_config(pipe.scheduler.config))
    sampler.set_progress_bar_config(disable=True)
    out = sampler(
        prompts,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
    )
    return out.images.float()
