"""Stable Diffusion 1.5- and 2.1-shaped models with random weights, built from their published configurations.

For benchmarks of the text-to-3D step at full size without any download (``uni3d bench sd-step``): the UNet,
VAE and CLIP text encoder are the released models' architectures (the ``config.json`` files of
``runwayml/stable-diffusion-v1-5`` and ``stabilityai/stable-diffusion-2-1``, restated here as keyword
arguments), randomly initialised, with the local tokenizer of :mod:`uni3d.models.tokenizer` in place of CLIP's
(the text encoder keeps CLIP's 49,408-token embedding table; every local id fits in it). Speed and memory are
those of the real models; the outputs mean nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from uni3d.errors import UsageError

if TYPE_CHECKING:  # diffusers and transformers are imported when a model is built, not with the CLI
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    from uni3d.models.stable_diffusion import PriorOptions, StableDiffusionPrior

CLIP_VOCAB = 49408
"""CLIP's BPE vocabulary size (both SD 1.x's ViT-L/14 and SD 2.x's OpenCLIP ViT-H/14 text towers)."""

_SD_BLOCKS: dict[str, Any] = {
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "in_channels": 4,
    "out_channels": 4,
}
_SD_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "scaling_factor": 0.18215,
}


@dataclass(frozen=True)
class Architecture:
    """One SD architecture: UNet and text-encoder keyword arguments, latent side and prediction type."""

    name: str
    unet: dict[str, Any]
    text_encoder: dict[str, Any]
    sample_size: int
    prediction_type: str


ARCHITECTURES: dict[str, Architecture] = {
    "sd15": Architecture(
        "sd15",
        {**_SD_BLOCKS, "cross_attention_dim": 768, "attention_head_dim": 8},
        {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "hidden_act": "quick_gelu",
            "projection_dim": 768,
        },
        64,
        "epsilon",
    ),
    "sd21": Architecture(
        "sd21",
        {
            **_SD_BLOCKS,
            "cross_attention_dim": 1024,
            "attention_head_dim": (5, 10, 20, 20),
            "use_linear_projection": True,
            "upcast_attention": True,
        },
        {
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 23,
            "num_attention_heads": 16,
            "hidden_act": "gelu",
            "projection_dim": 512,
        },
        96,
        "v_prediction",
    ),
}
"""``sd15``: SD 1.5 (512 px, epsilon). ``sd21``: SD 2.1 (768 px, v-prediction; 2.1-base is the same UNet at 512)."""


def sd_scheduler(prediction_type: str) -> DDPMScheduler:
    """SD's DDPM training schedule: ``scaled_linear`` betas 0.00085-0.012 over 1000 steps."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        clip_sample=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


def random_sd_modules(
    name: str, seed: int = 0
) -> tuple[AutoencoderKL, CLIPTextModel, Any, UNet2DConditionModel, DDPMScheduler]:
    """``(vae, text_encoder, tokenizer, unet, scheduler)`` of architecture ``name`` with random float32 weights
    (drawn under ``seed`` in a forked RNG; SD's ``scaled_linear`` DDPM schedule)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from uni3d.models.tokenizer import MAX_LENGTH, build_clip_tokenizer

    if name not in ARCHITECTURES:
        raise UsageError(f"unknown architecture {name!r}; valid: {', '.join(ARCHITECTURES)}")
    arch = ARCHITECTURES[name]
    tokenizer = build_clip_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=CLIP_VOCAB,
                max_position_embeddings=MAX_LENGTH,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                **arch.text_encoder,
            )
        )
        vae = AutoencoderKL(**_SD_VAE, sample_size=8 * arch.sample_size)
        unet = UNet2DConditionModel(**arch.unet, sample_size=arch.sample_size)
    return vae, text_encoder, tokenizer, unet, sd_scheduler(arch.prediction_type)


def random_sd_prior(name: str, options: PriorOptions | None = None, seed: int = 0) -> StableDiffusionPrior:
    """:func:`random_sd_modules` as a :class:`StableDiffusionPrior` with ``options`` (dtype, device, memory;
    :meth:`StableDiffusionPrior.from_modules`)."""
    from uni3d.models.stable_diffusion import StableDiffusionPrior

    return StableDiffusionPrior.from_modules(*random_sd_modules(name, seed), options)
