"""A tiny, randomly initialised Stable Diffusion folder built offline: for tests, and the embedded prior's start.

Same layout and classes as SD 1.x (``model_index.json``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
``unet/``, ``scheduler/``; written by ``StableDiffusionPipeline.save_pretrained``), at toy width: a 2-level VAE
(``/2`` downsampling, 4 latent channels), a 5-layer CLIP text encoder of width 32 with the local tokenizer of
:mod:`uni3d.models.tokenizer`, a 2-level UNet with cross-attention width 32, and SD's DDPM schedule
(``scaled_linear`` betas 0.00085-0.012 over 1000 steps) with the chosen prediction type.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from uni3d.errors import UsageError
from uni3d.models.sd_architectures import sd_scheduler
from uni3d.models.tokenizer import END, MAX_LENGTH, PROMPT_WORDS, WORDS_BEFORE_COMPOSITES, build_clip_tokenizer
from uni3d.models.views import ViewScheme, save_view_scheme

PREDICTION_TYPES = ("epsilon", "v_prediction")


def build_tiny_pipeline(
    folder: str | Path, prediction_type: str = "epsilon", seed: int = 0, sample_size: int = 32
) -> Path:
    """Write a tiny random SD-layout pipeline to ``folder`` (replacing it) and return the folder.

    ``sample_size`` is the UNet's latent side (the VAE's image side is twice that). Weights are drawn under
    ``torch.manual_seed(seed)`` inside a forked RNG, so the caller's random state is untouched.
    """
    return save_pipeline(tiny_pipeline(prediction_type, seed, sample_size), folder)


def tiny_pipeline(
    prediction_type: str = "epsilon", seed: int = 0, sample_size: int = 32, *, width: int = 32
) -> StableDiffusionPipeline:
    """The in-memory pipeline of :func:`build_tiny_pipeline` (the embedded prior's initialisation).

    ``width`` is the text encoder's width, the UNet's cross-attention width and its first level's channels (the
    second level's are twice that); the VAE does not change with it.
    """
    if prediction_type not in PREDICTION_TYPES:
        raise UsageError(f"unknown prediction type {prediction_type!r}; valid: {', '.join(PREDICTION_TYPES)}")
    if width < 16 or width % 16:
        raise UsageError(f"the prior's width must be a multiple of 16 (16, 32, 48, ...), got {width}")
    tokenizer = build_clip_tokenizer(WORDS_BEFORE_COMPOSITES)  # grown below, so earlier draws stay as they were
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=width,
                intermediate_size=width * 37 // 32,
                num_hidden_layers=5,
                num_attention_heads=4,
                max_position_embeddings=MAX_LENGTH,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(32, 64),
            latent_channels=4,
            sample_size=2 * sample_size,
        )
        unet = UNet2DConditionModel(
            sample_size=sample_size,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(width, 2 * width),
            layers_per_block=2,
            cross_attention_dim=width,
            attention_head_dim=8,
            norm_num_groups=math.gcd(width, 32),
        )
    scheduler = sd_scheduler(prediction_type)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return extend_vocabulary(pipe)


def extend_vocabulary(pipe: StableDiffusionPipeline) -> StableDiffusionPipeline:
    """``pipe`` with the current caption tokenizer when its own is an older one (every token at the same id), the
    text encoder's embedding table grown to match; any other tokenizer is left alone (its words tokenize byte by
    byte, as before).

    The new rows are random directions (seeded) at the median norm of the old caption words' rows, so the new words
    are told apart from the first step. transformers' default, every new row at the mean of the old ones, made them
    one word: a prior fine-tuned so for 1,800 steps drew a sphere the same size at every distance word.
    """
    current = build_clip_tokenizer()
    old, new = pipe.tokenizer.get_vocab(), current.get_vocab()
    if len(old) >= len(new) or any(new.get(token) != i for token, i in old.items()):
        return pipe
    pipe.text_encoder.resize_token_embeddings(len(new), mean_resizing=False)
    table = pipe.text_encoder.get_input_embeddings().weight
    words = [old[word + END] for word in PROMPT_WORDS if word + END in old]
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        rows = torch.randn(len(new) - len(old), table.shape[1])
        scale = table[words].norm(dim=1).median() if words else table[: len(old)].norm(dim=1).median()
        table[len(old) :] = (rows / rows.norm(dim=1, keepdim=True) * scale).to(table)
    pipe.register_modules(tokenizer=current)
    return pipe


def save_pipeline(pipe: StableDiffusionPipeline, folder: str | Path, views: ViewScheme | None = None) -> Path:
    """``pipe.save_pretrained(folder)`` (and ``views``' :data:`~uni3d.models.views.VIEWS_FILE`) through a sibling
    temporary folder, replacing ``folder`` only when done."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700; give the folder the usual permissions
        pipe.save_pretrained(tmp)
        if views is not None:
            save_view_scheme(tmp, views)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
