"""One text-to-3D optimisation step (METHOD.md section 7) and the state that checkpoints and rollbacks keep.

Per step, in this order:

1. cameras from the sampler -> render RGB and opacity (and the composited normal) -> bilinear resize to the
   prior's image side -> ``x0 = E(render)`` (VAE latent, live);
2. ``t ~ U[t_min, t_max(p)] T`` (annealed, :class:`uni3d.prior.TimestepRange`), ``sigma = sigma_t``,
   ``x_t = x0 + sigma n`` (VE units);
3. teacher ``D_q(x_t)`` with classifier-free guidance on the view-suffixed prompt; fake ``D_p(x_t)`` from the
   LoRA UNet with the camera embedding (``learned`` presets), parameters frozen, input live when the preset
   needs it (expanded and SiD forms; the teacher's input only with ``teacher_jacobian``); ``log r`` from the
   ratio head on the LoRA's mid-block features (ratio presets);
4. ``L = generator_loss(preset) + regularizers`` -> backprop into the field -> clipped Adam step;
5. ratio head: balanced BCE, real = the teacher bank noised at the same ``sigma``, fake = step 3's features
   (before the LoRA moves, so both sides see the same LoRA);
6. LoRA: denoising step (epsilon weighting) on ``sg(x0)`` at ``t ~ U[lora_t_min, lora_t_max] T``.

A non-finite loss or gradient anywhere rolls every trained tensor back to the last snapshot (taken every
``snapshot_every`` steps), counts it and goes on from there with fresh random draws; more than ``max_rollbacks``
raise :class:`NonFiniteError`. Nothing non-finite is ever applied or exported.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from uni3d.diffusion.units import classifier_free_guidance
from uni3d.losses import (
    RatioEstimate,
    discriminator_loss,
    fake_score_loss,
    generator_loss,
    get_preset,
    ratio_from_logits,
)
from uni3d.modules import frozen
from uni3d.pipeline.bank import TeacherBank, draw_bank
from uni3d.pipeline.config import GenerateConfig
from uni3d.pipeline.fake_score import LoraFakeScore, RatioHead, camera_condition
from uni3d.prior.stable_diffusion import StableDiffusionPrior
from uni3d.prior.timesteps import TimestepRange
from uni3d.reconstruct.fit import field_optimizer, unmask_levels
from uni3d.reconstruct.raster import LIGHT_DIR
from uni3d.scene.cameras import Cameras, CameraSampler, orbit_cameras
from uni3d.scene.field import RadianceField
from uni3d.scene.renderer import RenderOutput, build_renderer

SPARSITY_EPS = 0.01
"""``sqrt(o^2 + eps)``: the smooth L1 of threestudio's sparsity loss on the opacity ``o``."""


class NonFiniteError(RuntimeError):
    """Training kept producing non-finite values after ``max_rollbacks`` rollbacks."""


@dataclass
class Counters:
    """Repairs during training, all reported in ``metrics.json`` (nothing is dropped silently)."""

    rollbacks: int = 0
    nonfinite_steps: list[int] = field(default_factory=list)
    """The (1-based) steps whose loss or gradient was non-finite; each caused one rollback."""
    ratio_clamped: int = 0
    ratio_nonfinite: int = 0
    ratio_evaluations: int = 0


@dataclass(frozen=True)
class StepStats:
    """Scalars of one completed step."""

    loss: float
    regularizer: float
    opacity: float
    fake_loss: float | None
    ratio_loss: float | None
    t_max: float


def prior_image_size(prior: StableDiffusionPrior) -> int:
    """The prior's image side: UNet sample size times the VAE's downsampling (SD 1.5: 64 x 8 = 512)."""
    return int(prior.unet.config.sample_size) * 2 ** (len(prior.vae.config.block_out_channels) - 1)


def lr_factor(step: int, steps: int, warmup: int, final: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from 1 to ``final`` at ``steps``."""
    warm = min(1.0, (step + 1) / max(1, warmup))
    return warm * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(step / steps, 1.0))))


def regularizers(cfg: GenerateConfig, opacity: Tensor, normal: Tensor | None, dirs: Tensor) -> Tensor:
    """``l_s mean sqrt(o^2 + eps)`` (sparsity) + ``l_o mean H(o)`` (binary entropy: opaque or empty) +
    ``l_n mean max(0, n.d)^2`` (orientation, DreamFusion eq. in appendix A.2, on the composited normal
    ``n = sum w_i n_i``: by Jensen a lower bound of the per-sample form ``sum w_i max(0, n_i.d)^2``)."""
    reg = cfg.lambda_sparsity * (opacity.square() + SPARSITY_EPS).sqrt().mean()
    if cfg.lambda_opaque > 0:
        o = opacity.clamp(1e-4, 1 - 1e-4)
        reg = reg - cfg.lambda_opaque * (o * o.log() + (1 - o) * (1 - o).log()).mean()
    if normal is not None and cfg.lambda_orient > 0:
        reg = reg + cfg.lambda_orient * F.relu((normal * dirs).sum(-1)).square().mean()
    return reg


def surface_points(origins: Tensor, dirs: Tensor, opacity: Tensor, depth: Tensor) -> Tensor:
    """``(M, 3)`` points where the rays of opacity above 1/2 meet the surface, ``o + (depth / opacity) d``
    (the expected distance of the opaque part); detached."""
    hit = opacity.squeeze(-1) > 0.5
    distance = depth[hit] / opacity[hit]
    return (origins[hit] + distance * dirs[hit]).detach()


def normal_smoothness(field: RadianceField, points: Tensor, eps: float) -> Tensor:
    """``mean |n(x) - n(x + eps u)|_1``, ``u ~ N(0, I)``, over surface points ``x`` (threestudio's 3D normal
    smoothness): penalises the density normals turning within ``eps``, i.e. bumps smaller than ``eps``."""
    if len(points) == 0:
        return points.new_zeros(())
    jittered = points + eps * torch.randn_like(points)
    *_, normals = field.forward_with_normals(torch.cat([points, jittered]))
    n, n_jittered = normals.chunk(2)
    return (n - n_jittered).abs().sum(-1).mean()


class TextTo3D:
    """Field, renderer, fake score, ratio head, optimizers and teacher bank of one run (``cfg`` resolved)."""

    def __init__(self, cfg: GenerateConfig, prior: StableDiffusionPrior, bank: TeacherBank | None = None) -> None:
        self.cfg, self.prior = cfg, prior
        self.preset = get_preset(cfg.preset)
        self.device = prior.log_sigmas.device
        self.size = int(cfg.render_size or prior_image_size(prior))
        self.prior_size = prior_image_size(prior)
        self.sampler = CameraSampler(cfg.elevation_deg, cfg.azimuth_deg, cfg.distance, cfg.fov_deg)
        self.timesteps: TimestepRange = cfg.timestep_range()
        self.lora_timesteps = TimestepRange(cfg.lora_t_min, cfg.lora_t_max, cfg.lora_t_max)
        self.renderer = build_renderer(
            cfg.field,
            background=cfg.background,
            shading=cfg.shading,
            grid_resolution=cfg.grid_resolution,
            render_steps=cfg.render_steps,
            grid_min_density=cfg.grid_min_density,
        ).to(self.device)
        light = torch.nn.functional.normalize(torch.tensor(LIGHT_DIR), dim=0).to(self.device)
        self.light = light if cfg.light == "world" else None
        self.opt_g = field_optimizer(self.renderer, cfg.lr)
        learned = self.preset.fake_score == "learned"
        self.fake = LoraFakeScore(prior, cfg.lora_rank) if learned else None
        self.opt_f = torch.optim.Adam(self._trainable(self.fake), lr=cfg.lr_lora) if self.fake else None
        channels = int(prior.unet.config.block_out_channels[-1])
        self.head = RatioHead(channels, cfg.ratio_hidden).to(self.device) if self.preset.uses_ratio else None
        self.opt_r = torch.optim.Adam(self.head.parameters(), lr=cfg.lr_ratio) if self.head else None
        self.bank = bank
        if self.head is not None and bank is None:
            self.bank = self.draw_bank()
        self.step = 0
        self.counters = Counters()
        self.losses: list[float] = []
        self._snapshot: dict[str, Any] | None = None

    @staticmethod
    def _trainable(module: torch.nn.Module) -> list[torch.nn.Parameter]:
        return [p for p in module.parameters() if p.requires_grad]

    # ---- pieces of a step ----------------------------------------------------------------------------------------

    def draw_bank(self) -> TeacherBank:
        """The ratio head's "real" samples (METHOD.md section 5), drawn once."""
        c = self.cfg
        unet = self.prior.unet.config
        shape = (int(unet.in_channels), int(unet.sample_size), int(unet.sample_size))
        return draw_bank(
            self.prior,
            c.prompt,
            c.negative_prompt,
            self.sampler,
            self.size,
            shape,
            c.bank_size,
            c.bank_nfe,
            c.guidance_scale,
            c.view_dependent,
        )

    def conditions(self, cams: Cameras) -> tuple[Tensor, Tensor]:
        """``(cond, uncond)`` text embeddings of the prompt with each camera's view words and the negative prompt."""
        c = self.cfg
        return self.prior.view_conditions(c.prompt, cams, c.negative_prompt, c.view_dependent)

    def render(self, cams: Cameras) -> tuple[Tensor, RenderOutput, Tensor, Tensor]:
        """``rgb (B, 3, S, S)`` at the prior's side, the per-ray :class:`RenderOutput`, ray ``origins`` and ``dirs``
        ``(N, 3)`` (``N = B H W`` rays at the render side)."""
        origins, dirs = (t.reshape(-1, 3).to(self.device) for t in cams.rays())
        out = self.renderer(origins, dirs, light_dir=self.light, with_normals=self.cfg.lambda_orient > 0)
        rgb = out.rgb.view(len(cams), cams.height, cams.width, 3).permute(0, 3, 1, 2)
        if self.size != self.prior_size:
            rgb = F.interpolate(rgb, size=(self.prior_size, self.prior_size), mode="bilinear", align_corners=False)
        return rgb, out, origins, dirs

    def regularizer(self, out: RenderOutput, origins: Tensor, dirs: Tensor) -> Tensor:
        """:func:`regularizers` on the render, plus ``lambda_normal_smooth`` x :func:`normal_smoothness`."""
        c = self.cfg
        reg = regularizers(c, out.opacity, out.normal, dirs)
        if c.lambda_normal_smooth > 0:
            points = surface_points(origins, dirs, out.opacity, out.depth)
            reg = reg + c.lambda_normal_smooth * normal_smoothness(self.renderer.field, points, c.normal_smooth_eps)
        return reg

    def _log_ratio(self, features: Tensor, sigma: Tensor) -> RatioEstimate:
        """The head's ``log r``; without ``ratio_motion`` no sample's ratio moves (constant weights ``h(r)``)."""
        assert self.head is not None
        with torch.no_grad():
            est = ratio_from_logits(self.head(features, sigma), self.cfg.ratio_clamp)
        est.count_into(self.counters)
        return est if self.cfg.ratio_motion else est.held_constant()

    def _ratio_step(self, fake_features: Tensor, sigma: Tensor) -> float:
        """Balanced BCE: real = bank latents noised at ``sigma`` (their own views), fake = the generator's."""
        assert self.head is not None and self.opt_r is not None and self.fake is not None and self.bank is not None
        idx = torch.randint(len(self.bank), (len(sigma),)).to(self.device)
        real = self.bank.latents[idx]
        x_real = real + sigma.view(-1, 1, 1, 1) * torch.randn_like(real)
        cond, _ = self.conditions(self.bank.cameras(idx))
        with torch.no_grad():
            self.fake.denoise(x_real, sigma, cond, camera_condition(self.bank.c2w[idx]))
        real_features = self.fake.mid_features
        assert real_features is not None
        loss = discriminator_loss(self.head(real_features, sigma), self.head(fake_features, sigma))
        if not torch.isfinite(loss):
            return math.nan
        self.opt_r.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_r.step()
        return loss.item()

    def _fake_step(self, x0: Tensor, cond: Tensor, uncond: Tensor, c2w: Tensor) -> float:
        """LoRA denoising step on ``sg(x0)`` (epsilon weighting, the camera dropped with ``camera_drop``; with
        fake-score guidance the prompt is replaced by the negative prompt with ``text_drop``, so the LoRA also
        learns the unconditional score that guidance needs)."""
        assert self.fake is not None and self.opt_f is not None
        t = self.lora_timesteps.sample(len(x0), 0.0, self.prior.num_train_timesteps).to(self.device)
        sigma = self.prior.sigma_at(t.float())
        x_t = x0 + sigma.view(-1, 1, 1, 1) * torch.randn_like(x0)
        if self.cfg.fake_guidance_scale != 1.0:
            drop = (torch.rand(len(cond), 1, 1, device=cond.device) < self.cfg.text_drop).to(cond.dtype)
            cond = drop * uncond + (1 - drop) * cond
        d = self.fake.denoise(x_t, sigma, cond, camera_condition(c2w, self.cfg.camera_drop))
        loss = fake_score_loss(d, x0, sigma, "eps").mean()
        if not torch.isfinite(loss):
            return math.nan
        self.opt_f.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_f.step()
        return loss.item()

    def fake_denoise(self, x: Tensor, sigma: Tensor, cond: Tensor, uncond: Tensor, c2w: Tensor) -> Tensor:
        """``D_p`` for the generator loss: the camera-conditioned LoRA on the prompt (VSD), or with
        ``fake_guidance_scale`` ``g != 1`` guided like the teacher, ``D_p^u + g (D_p^c - D_p^u)`` (SiD-LSG's guidance of
        the fake score, Zhou et al. 2024). ``self.fake.mid_features`` are the prompt-conditioned pass's."""
        assert self.fake is not None
        camera, g = camera_condition(c2w), self.cfg.fake_guidance_scale
        if g == 1.0:
            return self.fake.denoise(x, sigma, cond, camera)
        d = self.fake.denoise(torch.cat([x, x]), sigma.repeat(2), torch.cat([uncond, cond]), camera.repeat(2, 1))
        features = self.fake.mid_features
        assert features is not None
        self.fake.mid_features = features[len(x) :]
        d_uncond, d_cond = d.chunk(2)
        return classifier_free_guidance(d_uncond, d_cond, g)

    def _step(self) -> StepStats | None:
        """Steps 1-6 of the module docstring; ``None`` as soon as something is non-finite (caller rolls back)."""
        c, prior = self.cfg, self.prior
        progress = self.step / c.steps
        for group in self.opt_g.param_groups:
            group["lr"] = c.lr * lr_factor(self.step, c.steps, c.lr_warmup_steps, c.lr_final)
        unmask_levels(self.renderer.field, c.start_levels, progress)
        if self.step % c.grid_every == 0:
            self.renderer.estimator.update(self.renderer.field.density, warmup=self.step == 0)
        cams = self.sampler.sample(c.views_per_step, self.size)
        cond, uncond = self.conditions(cams)
        c2w = cams.c2w.to(self.device)
        rgb, out, origins, dirs = self.render(cams)
        x0 = prior.encode(rgb)
        t = self.timesteps.sample(len(x0), progress, prior.num_train_timesteps).to(self.device)
        sigma = prior.sigma_at(t.float())
        x_t = x0 + sigma.view(-1, 1, 1, 1) * torch.randn_like(x0)
        live = self.preset.needs_input_grad
        x_in = x_t if live else x_t.detach()
        d_fake, features = None, None
        with torch.set_grad_enabled(live and c.teacher_jacobian):
            d_real = prior.denoise(x_in, sigma, cond, uncond, c.guidance_scale)
        with torch.set_grad_enabled(live):
            if self.fake is not None:
                with frozen(self.fake):
                    d_fake = self.fake_denoise(x_in, sigma, cond, uncond, c2w)
                features = self.fake.mid_features
        ratio = self._log_ratio(features, sigma) if self.head is not None and features is not None else None
        loss = generator_loss(self.preset, x0=x0, x_t=x_t, sigma=sigma, d_real=d_real, d_fake=d_fake, ratio=ratio)
        loss = loss.mean()
        reg = self.regularizer(out, origins, dirs)
        total = loss + reg
        if not torch.isfinite(total):
            return None
        if self.step >= c.fake_warmup_steps:  # the first steps train only the fake score and the ratio head
            self.opt_g.zero_grad(set_to_none=True)
            total.backward()
            norm = torch.nn.utils.clip_grad_norm_(self._trainable(self.renderer), c.grad_clip)
            if not torch.isfinite(norm):
                return None
            self.opt_g.step()
        ratio_loss = self._ratio_step(features, sigma) if self.head is not None and features is not None else None
        fake_loss = self._fake_step(x0.detach(), cond, uncond, c2w) if self.fake is not None else None
        if any(v is not None and not math.isfinite(v) for v in (ratio_loss, fake_loss)):
            return None
        t_max = self.timesteps.bounds(progress)[1]
        return StepStats(loss.item(), reg.item(), out.opacity.detach().mean().item(), fake_loss, ratio_loss, t_max)

    # ---- one step with rollback ----------------------------------------------------------------------------------

    def train_step(self) -> StepStats | None:
        """One step; on a non-finite value, roll back to the last snapshot (``None``) or raise after too many."""
        if self._snapshot is None or self.step % self.cfg.snapshot_every == 0:
            self._snapshot = copy.deepcopy(self.training_state())
        stats = self._step()
        if stats is None:
            self.counters.rollbacks += 1
            self.counters.nonfinite_steps.append(self.step + 1)
            if self.counters.rollbacks > self.cfg.max_rollbacks:
                raise NonFiniteError(
                    f"training diverged: {self.counters.rollbacks} non-finite steps (last at step {self.step + 1}); "
                    "try a lower learning rate or guidance scale, or a higher t_min"
                )
            self.load_training_state(self._snapshot)
            return None
        self.step += 1
        self.losses.append(stats.loss)
        return stats

    # ---- state -------------------------------------------------------------------------------------------------

    def training_state(self) -> dict[str, Any]:
        """Every trained tensor and optimizer state, and the step (what a rollback restores)."""
        state: dict[str, Any] = {
            "step": self.step,
            "renderer": self.renderer.state_dict(),
            "opt_g": self.opt_g.state_dict(),
        }
        if self.fake is not None and self.opt_f is not None:
            state["fake"], state["opt_f"] = self.fake.trainable_state(), self.opt_f.state_dict()
        if self.head is not None and self.opt_r is not None:
            state["head"], state["opt_r"] = self.head.state_dict(), self.opt_r.state_dict()
        return state

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`training_state` (tensors are copied in, so the snapshot stays reusable)."""
        self.step = int(state["step"])
        self.renderer.load_state_dict(state["renderer"])
        self.opt_g.load_state_dict(copy.deepcopy(state["opt_g"]))
        if self.fake is not None and self.opt_f is not None:
            self.fake.load_trainable_state(state["fake"])
            self.opt_f.load_state_dict(copy.deepcopy(state["opt_f"]))
        if self.head is not None and self.opt_r is not None:
            self.head.load_state_dict(state["head"])
            self.opt_r.load_state_dict(copy.deepcopy(state["opt_r"]))

    def checkpoint(self, seconds: float) -> dict[str, Any]:
        """:meth:`training_state` plus the bank, counters, loss history, RNG states and training seconds."""
        state = self.training_state()
        state["bank"] = asdict(self.bank) if self.bank is not None else None
        state["counters"] = asdict(self.counters)
        state["losses"] = list(self.losses)
        state["rng"] = torch.get_rng_state()
        state["cuda_rng"] = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        state["seconds"] = seconds
        return state

    def load_checkpoint(self, state: dict[str, Any]) -> float:
        """Restore :meth:`checkpoint` (the bank was given to the constructor); returns the training seconds."""
        self.load_training_state(state)
        self.counters = Counters(**state["counters"])
        self.losses = list(state["losses"])
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return float(state["seconds"])

    def field_is_finite(self) -> bool:
        """Whether every field and background parameter is finite (checked before export)."""
        return all(bool(torch.isfinite(p).all()) for p in self.renderer.parameters())

    @torch.no_grad()
    def preview(self, n_views: int = 4) -> Tensor:
        """``(n_views, S, S, 3)`` uint8 orbit renders at the render side (eval mode, the run's light)."""
        distance = sum(self.cfg.distance) / 2
        orbit = orbit_cameras(n_views, elevation_deg=15.0, distance=distance, size=self.size)
        cams = Cameras(orbit.c2w.to(self.device), orbit.fov_y.to(self.device), orbit.height, orbit.width)
        self.renderer.eval()
        try:
            rgb = self.renderer.render_images(cams, light_dir=self.light)["rgb"]
        finally:
            self.renderer.train()
        return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
