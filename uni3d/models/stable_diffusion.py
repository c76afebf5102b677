"""One Stable Diffusion prior: any SD 1.x/2.x folder in diffusers layout (the embedded one included) as a
teacher denoiser ``D_q(x; sigma)`` in VE units (METHOD.md sections 1 and 7).

SD is VP: ``x_vp = alpha x0 + sigma_vp eps`` at discrete timesteps with ``alpha_bar_t`` from the scheduler
config. The loss module is VE: ``x = x0 + sigma n``. :meth:`StableDiffusionPrior.denoise` takes a VE latent
``x`` and level ``sigma``, feeds the UNet ``x_vp = alpha x`` at the (fractional) timestep whose
``sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)`` equals ``sigma`` (log-linear interpolation in the table),
converts its eps / v / x0 output to ``D`` and applies classifier-free guidance, all through
:mod:`uni3d.diffusion.units`. Prompts get each camera's view words in the prior's view scheme (:mod:`uni3d.models.views`:
the folder's ``uni3d_views.json``, else DreamFusion's ``coarse`` words); their CLIP embeddings are cached. Latents are VAE means times the VAE's ``scaling_factor`` (SD's latent units).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from torch import Tensor, nn
from transformers import CLIPTextModel, CLIPTokenizer

from uni3d.diffusion.units import (
    Prediction,
    classifier_free_guidance,
    denoiser_from_prediction,
    ve_sigma,
    vp_coefficients,
)
from uni3d.errors import UsageError
from uni3d.models.prior_source import PRIOR_DTYPES, check_prior_dtype, missing_prior, resolve_prior_source
from uni3d.models.views import COARSE, ViewScheme, load_view_scheme
from uni3d.scene.cameras import Cameras

DTYPES: dict[str, torch.dtype] = dict(zip(PRIOR_DTYPES, (torch.float32, torch.float16, torch.bfloat16), strict=True))
PREDICTIONS: dict[str, Prediction] = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
"""diffusers' ``prediction_type`` -> the unit of :mod:`uni3d.diffusion.units`."""


@dataclass(frozen=True)
class PriorOptions:
    """How to load and run the prior.

    ``dtype``: UNet, text-encoder and VAE weights (``fp32`` | ``fp16`` | ``bf16``), except that the VAE stays
    fp32 under fp16 (SD's VAE overflows in fp16; diffusers' ``force_upcast``). ``allow_download``: let
    diffusers fetch a hub id missing from the Hugging Face cache. Memory: ``attention_slicing`` (UNet
    attention in slices), ``channels_last`` (UNet and VAE in channels-last memory format, and the images the VAE
    encodes: oneDNN's and cuDNN's faster convolution layout), ``vae_slicing`` (VAE one image at a time).
    """

    dtype: str = "fp32"
    device: str = "cpu"
    allow_download: bool = False
    attention_slicing: bool = False
    channels_last: bool = False
    vae_slicing: bool = False

    def __post_init__(self) -> None:
        check_prior_dtype(self.dtype)


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear ``f(x)`` through the points ``(xp, fp)`` (``xp`` increasing), clamped at the ends."""
    x = x.clamp(xp[0], xp[-1])
    i = torch.searchsorted(xp, x).clamp(1, len(xp) - 1)
    w = (x - xp[i - 1]) / (xp[i] - xp[i - 1])
    return fp[i - 1] + w * (fp[i] - fp[i - 1])


class StableDiffusionPrior(nn.Module):
    """Frozen SD components and the conversions to the loss module's units; build with :meth:`from_pretrained`."""

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        alphas_cumprod: Tensor,
        prediction: Prediction,
        views: ViewScheme = COARSE,
    ) -> None:
        super().__init__()
        self.views = views
        self.vae, self.text_encoder, self.tokenizer, self.unet = vae, text_encoder, tokenizer, unet
        for module in (vae, text_encoder, unet):
            module.requires_grad_(False).eval()
        self.prediction = prediction
        # log sigma_t of every training timestep (float64: the table is also inverted)
        self.register_buffer("log_sigmas", ve_sigma(alphas_cumprod.double()).log(), persistent=False)
        self._embeddings: dict[str, Tensor] = {}

    @classmethod
    def from_pretrained(cls, source: str | Path, options: PriorOptions | None = None) -> StableDiffusionPrior:
        """Load an SD folder or hub id (local files only unless ``options.allow_download``); one-line errors."""
        opts = options or PriorOptions()
        where = resolve_prior_source(source)
        dtype = DTYPES[opts.dtype]
        vae_dtype = torch.float32 if opts.dtype == "fp16" else dtype
        local = {"local_files_only": not opts.allow_download}
        try:
            vae = AutoencoderKL.from_pretrained(where, subfolder="vae", torch_dtype=vae_dtype, **local)
            text_encoder = CLIPTextModel.from_pretrained(where, subfolder="text_encoder", dtype=dtype, **local)
            tokenizer = CLIPTokenizer.from_pretrained(where, subfolder="tokenizer", **local)
            unet = UNet2DConditionModel.from_pretrained(where, subfolder="unet", torch_dtype=dtype, **local)
            sched_cfg = DDPMScheduler.load_config(where, subfolder="scheduler", **local)
        except (OSError, ValueError) as err:
            raise missing_prior(str(source), f"{type(err).__name__}: {err}") from err
        scheduler = DDPMScheduler.from_config(sched_cfg)
        return cls.from_modules(vae, text_encoder, tokenizer, unet, scheduler, opts, source, load_view_scheme(where))

    @classmethod
    def from_modules(
        cls,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: DDPMScheduler,
        options: PriorOptions | None = None,
        source: str = "the prior",
        views: ViewScheme = COARSE,
    ) -> StableDiffusionPrior:
        """The prior of in-memory SD components, in ``options``' dtype (the VAE in fp32 under fp16), device and
        memory options, prompted in ``views``; ``source`` names them in errors."""
        opts = options or PriorOptions()
        dtype = DTYPES[opts.dtype]
        vae_dtype = torch.float32 if opts.dtype == "fp16" else dtype
        if vae.dtype != vae_dtype:  # loaded weights come in their dtype already
            vae = vae.to(vae_dtype)
        if unet.dtype != dtype:
            text_encoder, unet = text_encoder.to(dtype), unet.to(dtype)
        kind = scheduler.config.prediction_type
        if kind not in PREDICTIONS:
            raise UsageError(f"unsupported prediction_type {kind!r} in {source}; valid: {', '.join(PREDICTIONS)}")
        if opts.attention_slicing:
            unet.set_attention_slice("auto")
        if opts.channels_last:
            unet = unet.to(memory_format=torch.channels_last)
            vae = vae.to(memory_format=torch.channels_last)
        if opts.vae_slicing:
            vae.enable_slicing()
        prior = cls(vae, text_encoder, tokenizer, unet, scheduler.alphas_cumprod, PREDICTIONS[kind], views)
        return prior.to(opts.device)

    @property
    def num_train_timesteps(self) -> int:
        """``T``, the number of discrete training timesteps."""
        return len(self.log_sigmas)

    def sigma_at(self, t: Tensor) -> Tensor:
        """VE level ``sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)`` of (fractional) timesteps ``t (B,)``."""
        steps = torch.arange(self.num_train_timesteps, dtype=torch.float64, device=self.log_sigmas.device)
        return _interp(t.to(steps), steps, self.log_sigmas).exp().float()

    def timestep_at(self, sigma: Tensor) -> Tensor:
        """Inverse of :meth:`sigma_at` (fractional timesteps, clamped to ``[0, T - 1]``), ``(B,)`` float32."""
        steps = torch.arange(self.num_train_timesteps, dtype=torch.float64, device=self.log_sigmas.device)
        return _interp(sigma.to(steps).log(), self.log_sigmas, steps).float()

    @torch.no_grad()
    def embed(self, prompts: Sequence[str]) -> Tensor:
        """CLIP last hidden states ``(B, 77, C)`` of ``prompts`` (padded to the context length), cached per prompt."""
        new = [p for p in dict.fromkeys(prompts) if p not in self._embeddings]
        if new:
            ids = self.tokenizer(
                new,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(self.log_sigmas.device)
            hidden = self.text_encoder(ids)[0]
            self._embeddings.update(zip(new, hidden, strict=True))
        return torch.stack([self._embeddings[p] for p in prompts])

    def view_conditions(
        self, prompt: str, cameras: Cameras, negative_prompt: str = "", view_dependent: bool = True
    ) -> tuple[Tensor, Tensor]:
        """``(cond, uncond)`` embeddings ``(B, 77, C)``: the prompt with each camera's view words (the prior's
        :class:`ViewScheme`), and the negative."""
        n = len(cameras)
        prompts = self.views.prompts(prompt, cameras) if view_dependent else [prompt] * n
        return self.embed(prompts), self.embed([negative_prompt] * n)

    def encode(self, rgb: Tensor) -> Tensor:
        """Latents ``(B, 4, H/f, W/f)`` (float32) of images ``rgb (B, 3, H, W)`` in ``[0, 1]``; differentiable."""
        vae_dtype = self.vae.dtype
        images = (2 * rgb - 1).to(vae_dtype)
        if self.vae.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last):
            images = images.contiguous(memory_format=torch.channels_last)
        posterior = self.vae.encode(images).latent_dist
        return posterior.mean.float() * self.vae.config.scaling_factor

    def decode(self, latents: Tensor) -> Tensor:
        """Images ``(B, 3, H, W)`` in ``[0, 1]`` (float32) from latents in SD units."""
        vae_dtype = self.vae.dtype
        images = self.vae.decode((latents / self.vae.config.scaling_factor).to(vae_dtype)).sample
        return ((images.float() + 1) / 2).clamp(0, 1)

    def denoise(
        self,
        x: Tensor,
        sigma: Tensor,
        cond: Tensor,
        uncond: Tensor | None = None,
        guidance_scale: float = 1.0,
    ) -> Tensor:
        """Teacher denoiser ``D_q(x; sigma)`` (VE units, float32) with CFG ``D_u + w (D_c - D_u)``.

        ``x (B, 4, h, w)`` is a VE latent ``x0 + sigma n``; ``sigma (B,)``; ``cond``/``uncond`` come from
        :meth:`view_conditions` or :meth:`embed`. ``uncond=None`` gives the conditional prediction alone.
        Parameters are frozen; gradients flow to ``x`` unless the caller uses ``torch.no_grad()``.
        """
        reps = 1 if uncond is None else 2  # [uncond; cond] in one UNet batch
        alpha, _ = vp_coefficients(sigma.float())
        x_vp = (alpha.view(-1, 1, 1, 1) * x.float()).repeat(reps, 1, 1, 1)
        context = cond if uncond is None else torch.cat([uncond, cond])
        dtype = self.unet.dtype
        t = self.timestep_at(sigma).repeat(reps)
        out = self.unet(x_vp.to(dtype), t, encoder_hidden_states=context.to(dtype)).sample.float()
        d = denoiser_from_prediction(out, x_vp, sigma.float().repeat(reps), self.prediction)
        if uncond is None:
            return d
        d_uncond, d_cond = d.chunk(2)
        return classifier_free_guidance(d_uncond, d_cond, guidance_scale)
