"""One text-to-3D optimisation step (METHOD.md section 7) and the state that checkpoints and rollbacks keep.

Per step, in this order:

1. cameras from the sampler -> render RGB and opacity (and the composited normal) -> bilinear resize to the
   prior's image side (or ``encode_size``) -> ``x0 = E(render)`` (VAE latent, live; resized to the UNet's side);
2. ``t`` from the schedule (:class:`uni3d.diffusion.timesteps.TimestepRange`), ``sigma = sigma_t``,
   ``x_t = x0 + sigma n`` (VE units), ``n`` fresh or the particle's own seeded noise (``noise="seeded"``);
3. teacher ``D_q(x_t)`` with classifier-free guidance on the view-suffixed prompt; fake ``D_p(x_t)`` from the
   LoRA UNet with the camera embedding (``learned`` presets), parameters frozen, or with
   ``fake_estimator="particles"`` the exact denoiser of the particles' renders at the same cameras (an
   empirical distribution, :mod:`uni3d.diffusion.empirical`); input live when the preset needs it (expanded and
   SiD forms; the teacher's input only with ``teacher_jacobian``); ``log r`` from the ratio head on the LoRA's
   mid-block features, or the teacher's without a LoRA (ratio presets);
4. ``L = generator_loss(preset) + regularizers`` -> backprop into the field -> clipped Adam step;
5. ratio head: balanced BCE, real = the teacher bank noised at the same ``sigma``, fake = step 3's features
   (before the LoRA moves, so both sides see the same LoRA);
6. LoRA: denoising step (epsilon weighting) on ``sg(x0)`` at ``t ~ U[lora_t_min, lora_t_max] T`` (or, with
   ``lora_t_schedule="generator"``, at the generator pass's schedule).

Steps 3-6 run in the shared :class:`~uni3d.engine.DistillationLoop` (``generator-first`` order); this module
supplies the stages. A non-finite loss or gradient anywhere rolls every trained tensor back to the last snapshot
(taken every ``snapshot_every`` steps), counts it and goes on from there with fresh random draws; more than
``max_rollbacks`` raise :class:`~uni3d.engine.NonFiniteError`. Nothing non-finite is ever applied or exported.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.profiler import record_function

from uni3d.diffusion.empirical import empirical_denoise
from uni3d.diffusion.timesteps import TimestepRange
from uni3d.diffusion.units import classifier_free_guidance
from uni3d.engine import STAGE, Counters, Denoised, DistillationLoop, Draw, LoopSettings, Part
from uni3d.errors import UsageError
from uni3d.losses import RatioEstimate, fake_score_loss
from uni3d.models.frozen import frozen, mid_block_outputs
from uni3d.models.latent_rgb import fit_latent_map
from uni3d.models.lora_fake_score import LoraFakeScore, camera_condition
from uni3d.models.ratio_heads import PooledRatioHead
from uni3d.models.stable_diffusion import StableDiffusionPrior
from uni3d.scene.cameras import Cameras, CameraSampler, orbit_cameras
from uni3d.scene.optim import field_optimizer, unmask_levels
from uni3d.scene.renderer import RenderOutput, VolumeRenderer, build_renderer
from uni3d.scene.shading import key_light
from uni3d.tasks.text_to_3d.bank import TeacherBank, draw_bank
from uni3d.tasks.text_to_3d.config import GenerateConfig
from uni3d.tasks.text_to_3d.corrective import CORRECTIVE_LR
from uni3d.tasks.text_to_3d.distiller_step import DistillerStep
from uni3d.tasks.text_to_3d.distillers import Distiller, get_distiller, loss_preset
from uni3d.tasks.text_to_3d.regularizers import normal_smoothness, regularizers, surface_points
from uni3d.tasks.text_to_3d.seeds import particle_generator


@dataclass(frozen=True)
class Views:
    """One step's cameras and what was computed from them: text conditions and, per particle drawn, the render
    and its rays (``particles[i]``'s views are the ``i``-th block of ``cameras``)."""

    cameras: Cameras
    cond: Tensor
    uncond: Tensor
    c2w: Tensor
    particles: list[int]
    renders: list[RenderOutput]
    origins: list[Tensor]
    dirs: list[Tensor]
    progress: float


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


def encode_side(cfg: GenerateConfig, prior: StableDiffusionPrior) -> int:
    """The side renders are resized to before the VAE encoder: ``cfg.encode_size``, else the prior's image side."""
    full = prior_image_size(prior)
    if cfg.encode_size is None:
        return full
    factor = full // int(prior.unet.config.sample_size)
    if cfg.encode_size > full or cfg.encode_size % factor:
        raise UsageError(
            f"encode_size {cfg.encode_size} must be a multiple of the VAE's factor {factor}, at most {full}"
        )
    return int(cfg.encode_size)


def lr_factor(step: int, steps: int, warmup: int, final: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from 1 to ``final`` at ``steps``."""
    warm = min(1.0, (step + 1) / max(1, warmup))
    return warm * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(step / steps, 1.0))))


class TextTo3D:
    """Field, renderer, fake score, ratio head, optimizers and teacher bank of one run (``cfg`` resolved), and the
    named stages of its step that the shared loop and the diagnostic benchmarks call."""

    def __init__(self, cfg: GenerateConfig, prior: StableDiffusionPrior, bank: TeacherBank | None = None) -> None:
        self.cfg, self.prior = cfg, prior
        self.distiller: Distiller | None = get_distiller(cfg.preset)
        self.preset = loss_preset(cfg.preset)
        self.device = prior.log_sigmas.device
        self.base_size = int(cfg.render_size or prior_image_size(prior))
        self.size = self.base_size
        self.step_shading: str | None = None
        self.prior_size = prior_image_size(prior)
        self.encode_size = encode_side(cfg, prior)
        self.latent_map = fit_latent_map(prior) if cfg.latent_until > 0 else None
        self.in_latent_stage = False
        """Whether the current step renders straight into latent space (``latent_until``)."""
        self.sampler = CameraSampler(cfg.elevation_deg, cfg.azimuth_deg, cfg.distance, cfg.fov_deg)
        self.timesteps: TimestepRange = cfg.timestep_range()
        self.lora_timesteps = TimestepRange(cfg.lora_t_min, cfg.lora_t_max, cfg.lora_t_max)
        self.renderers = [
            build_renderer(
                cfg.field,
                background=cfg.background,
                shading=cfg.shading,
                grid_resolution=cfg.grid_resolution,
                render_steps=cfg.render_steps,
                grid_min_density=cfg.grid_min_density,
            ).to(self.device)
            for _ in range(cfg.particles)
        ]
        light = key_light(device=self.device)
        self.light = light if cfg.light == "world" else None
        self.opt_g = field_optimizer(self.renderers, cfg.lr)
        learned = self.preset.fake_score == "learned" and (self.distiller is None or self.distiller.fake == "loss")
        self.empirical = cfg.resolved_fake_estimator() == "particles"
        """``D_p`` is the particles' empirical denoiser (every particle rendered from the same cameras)."""
        learned = learned and not self.empirical
        self.fake = LoraFakeScore(prior, cfg.lora_rank) if learned else None
        self.distiller_step = DistillerStep(self.distiller, self) if self.distiller is not None else None
        self.corrective = self.distiller_step.corrective if self.distiller_step is not None else None
        channels = int(prior.unet.config.block_out_channels[-1])
        self.head = PooledRatioHead(channels, cfg.ratio_hidden).to(self.device) if self.preset.uses_ratio else None
        self.bank = bank
        if self.head is not None and bank is None:
            self.bank = self.draw_bank()
        fake = None
        if self.fake is not None:
            opt_f = torch.optim.Adam(self._trainable(self.fake), lr=cfg.lr_lora)
            fake = Part(
                "fake",
                self.fake,
                opt_f,
                optimizer_key="opt_f",
                state=self.fake.trainable_state,
                load=self.fake.load_trainable_state,
            )
        if self.corrective is not None:
            opt_k = torch.optim.Adam(self.corrective.parameters(), lr=CORRECTIVE_LR)
            fake = Part("corrective", self.corrective, opt_k, optimizer_key="opt_k")
        ratio = None
        if self.head is not None:
            ratio = Part(
                "head", self.head, torch.optim.Adam(self.head.parameters(), lr=cfg.lr_ratio), optimizer_key="opt_r"
            )
        fields = self.renderers[0] if cfg.particles == 1 else torch.nn.ModuleList(self.renderers)
        generator = Part(
            "renderer",
            fields,
            self.opt_g,
            optimizer_key="opt_g",
            clip=cfg.grad_clip,
            clip_groups=[self._trainable(r) for r in self.renderers],  # each particle clipped on its own
        )
        settings = LoopSettings(
            order="generator-first",
            warmup_steps=cfg.fake_warmup_steps,
            ratio_clamp=cfg.ratio_clamp,
            ratio_motion=cfg.ratio_motion,
            nonfinite="rollback",
            snapshot_every=cfg.snapshot_every,
            max_rollbacks=cfg.max_rollbacks,
            diverged_hint="try a lower learning rate or guidance scale, or a higher t_min",
        )
        self.loop = DistillationLoop(self, self.preset, generator, fake=fake, ratio=ratio, settings=settings)
        self.losses: list[float] = []
        own = self.distiller is not None and self.distiller.noise in ("path", "consistent")
        self.seeded_noise = self._seeded_noise() if own or cfg.resolved_noise() == "seeded" else None

    def _seeded_noise(self) -> Tensor:
        """``(particles, C, h, w)``: particle ``k``'s noise image, drawn from ``(seed, k)`` alone (the same for any
        particle count, not kept in checkpoints: a resumed run draws it again)."""
        unet = self.prior.unet.config
        shape = (int(unet.in_channels), int(unet.sample_size), int(unet.sample_size))
        noise = [torch.randn(shape, generator=particle_generator(self.cfg.seed, k)) for k in range(len(self.renderers))]
        return torch.stack(noise).to(self.device)

    @staticmethod
    def _trainable(module: torch.nn.Module) -> list[torch.nn.Parameter]:
        return [p for p in module.parameters() if p.requires_grad]

    @property
    def shown_size(self) -> int:
        """The side of what people look at (previews, the reported render size): the render side, or the run's
        own render side while the latent stage renders at the latent one."""
        return self.base_size if self.in_latent_stage else self.size

    @property
    def step(self) -> int:
        """Completed steps."""
        return self.loop.step_count

    @property
    def counters(self) -> Counters:
        return self.loop.counters

    @property
    def renderer(self) -> VolumeRenderer:
        """The field of a single-particle run."""
        if len(self.renderers) != 1:
            raise ValueError(f"this run has {len(self.renderers)} particles; use renderers[k]")
        return self.renderers[0]

    def active_particles(self, step: int) -> list[int]:
        """The particles drawn at ``step``: all of them, or ``particles_per_step`` in rotation."""
        k, m = self.cfg.particles, self.cfg.particles_per_step or self.cfg.particles
        return sorted((step * m + i) % k for i in range(m))

    # ---- stages of a step ----------------------------------------------------------------------------------------

    def draw_bank(self) -> TeacherBank:
        """The ratio head's "real" samples (METHOD.md section 5), drawn once."""
        return draw_bank(self.prior, self.cfg, self.sampler, size=self.size)

    def conditions(self, cams: Cameras) -> tuple[Tensor, Tensor]:
        """``(cond, uncond)`` text embeddings of the prompt with each camera's view words and the negative prompt."""
        c = self.cfg
        return self.prior.view_conditions(c.prompt, cams, c.negative_prompt, c.view_dependent)

    def prepare(self, step: int) -> None:
        """Schedules of ``step``: the fields' learning rate, their unmasked levels, their occupancy grids."""
        c = self.cfg
        for group in self.opt_g.param_groups:
            group["lr"] = c.lr * lr_factor(step, c.steps, c.lr_warmup_steps, c.lr_final)
        milestone = c.render_milestone
        self.size = milestone[1] if milestone is not None and step >= milestone[0] * c.steps else self.base_size
        self.in_latent_stage = step < c.latent_until * c.steps
        if self.in_latent_stage:
            self.size = int(self.prior.unet.config.sample_size)
        self.step_shading = self.shading_at(step)
        for renderer in self.renderers:
            unmask_levels(renderer.field, c.start_levels, step / c.steps)
            if step % c.grid_every == 0:
                renderer.estimator.update(renderer.field.density, warmup=step == 0)

    def shading_at(self, step: int) -> str | None:
        """The shading of ``step``'s renders: ``albedo`` before progress ``albedo_until``, then textureless with
        probability ``textureless_prob``, else ``None`` (the run's ``shading``)."""
        c = self.cfg
        if step < c.albedo_until * c.steps:
            return "albedo"
        if c.textureless_prob > 0 and float(torch.rand(())) < c.textureless_prob:
            return "textureless"
        return None

    def render(self, cams: Cameras, particle: int = 0) -> tuple[Tensor, RenderOutput, Tensor, Tensor]:
        """``rgb (B, 3, S, S)`` of ``particle`` at the prior's side (at the latent side in the latent stage), the
        per-ray :class:`RenderOutput`, ray ``origins`` and ``dirs`` ``(N, 3)`` (``N = B H W`` rays at the render
        side)."""
        origins, dirs = (t.reshape(-1, 3).to(self.device) for t in cams.rays())
        renderer = self.renderers[particle]
        out = renderer(
            origins, dirs, light_dir=self.light, with_normals=self.cfg.lambda_orient > 0, shading=self.step_shading
        )
        rgb = out.rgb.view(len(cams), cams.height, cams.width, 3).permute(0, 3, 1, 2)
        if self.size != self.encode_size and not self.in_latent_stage:
            rgb = F.interpolate(rgb, size=(self.encode_size, self.encode_size), mode="bilinear", align_corners=False)
        return rgb, out, origins, dirs

    def noise_level(self, n: int, progress: float) -> Tensor:
        """``sigma (n,)`` of ``t ~ U[t_min, t_max(progress)] T`` (the annealed range)."""
        t = self.timesteps.sample(n, progress, self.prior.num_train_timesteps).to(self.device)
        return self.prior.sigma_at(t.float())

    def noise(self, x0: Tensor, particles: list[int]) -> Tensor:
        """``n`` of ``x_t = x0 + sigma n`` for renders ``x0`` of ``particles`` (as many renders of each, in order):
        fresh ``N(0, I)``, or each particle's seeded noise image."""
        if self.seeded_noise is None or self.cfg.resolved_noise() == "fresh":
            return torch.randn_like(x0)
        return self.particle_seeds(particles, len(x0))

    def particle_seeds(self, particles: list[int], n: int) -> Tensor:
        """``(n, C, h, w)``: each of ``particles``' seeded noise image, repeated for its ``n / len(particles)``
        renders (in order)."""
        assert self.seeded_noise is not None
        return self.seeded_noise[particles].repeat_interleave(n // len(particles), 0)

    def teacher_denoise(self, x: Tensor, sigma: Tensor, cond: Tensor, uncond: Tensor) -> Tensor:
        """``D_q`` with classifier-free guidance; differentiated in ``x`` only with ``teacher_jacobian``."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.cfg.teacher_jacobian):
            return self.prior.denoise(x, sigma, cond, uncond, self.cfg.guidance_scale)

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

    def ratio_estimate(self, features: Tensor, sigma: Tensor) -> RatioEstimate:
        """The head's ``log r`` at the fake score's ``features`` (clamped and counted; held constant without
        ``ratio_motion``)."""
        assert self.head is not None
        with torch.no_grad():
            logits = self.head(features, sigma)
        est = self.loop.ratio_estimate(logits)
        assert est is not None
        return est

    def regularizer(self, out: RenderOutput, origins: Tensor, dirs: Tensor, particle: int = 0) -> Tensor:
        """:func:`regularizers` on ``particle``'s render, plus ``lambda_normal_smooth`` x :func:`normal_smoothness`."""
        c = self.cfg
        reg = regularizers(c, out.opacity, out.normal, dirs)
        if c.lambda_normal_smooth > 0:
            points = surface_points(origins, dirs, out.opacity, out.depth)
            field = self.renderers[particle].field
            reg = reg + c.lambda_normal_smooth * normal_smoothness(field, points, c.normal_smooth_eps)
        return reg

    # ---- what the shared loop asks for ---------------------------------------------------------------------------

    def draw(self, step: int, *, train_generator: bool) -> Draw:
        """Schedules, cameras, text conditions, render and ``x0 = E(render)`` (the fitted latent map in the latent
        stage; live: the regularizers need the render's graph even while only the fake score trains)."""
        self.prepare(step)
        particles, n = self.active_particles(step), self.cfg.views_per_step
        if self.empirical:  # the same n cameras for every particle: the empirical denoiser compares like views
            cams = self.sampler.sample(n, self.size)[torch.arange(n * len(particles)) % n]
        else:
            cams = self.sampler.sample(n * len(particles), self.size)
        cond, uncond = self.conditions(cams)
        c2w = cams.c2w.to(self.device)
        with record_function(f"{STAGE}render"):
            rendered = [self.render(cams[i * n : (i + 1) * n], k) for i, k in enumerate(particles)]
            rgb = torch.cat([r[0] for r in rendered])
        renders, origins, dirs = ([r[i] for r in rendered] for i in (1, 2, 3))
        views = Views(cams, cond, uncond, c2w, particles, renders, origins, dirs, step / self.cfg.steps)
        x0 = self.to_latents(rgb)
        return Draw(x0, views, groups=len(particles))

    def to_latents(self, rgb: Tensor) -> Tensor:
        """``x0`` of renders from :meth:`render`: the VAE encoder's latents, or in the latent stage the prior's
        fitted latent map of the latent-side colours."""
        if self.latent_map is not None and self.in_latent_stage:
            return self.latent_map(rgb)
        with record_function(f"{STAGE}vae_encode"):
            latents = self.prior.encode(rgb)
        side = int(self.prior.unet.config.sample_size)
        if latents.shape[-1] != side:  # a lower encode side (``encode_size``)
            latents = F.interpolate(latents, size=(side, side), mode="bilinear", align_corners=False)
        return latents

    def denoise(self, draw: Draw) -> Denoised:
        """``x_t`` at an annealed noise level, ``D_q`` (guided), ``D_p`` (frozen LoRA, live input when the preset
        needs it) and the ratio head's logits on the LoRA's mid-block features."""
        v: Views = draw.context
        x0 = draw.x0
        sigma = self.noise_level(len(x0), v.progress)
        if self.distiller_step is not None:
            return self.distiller_step.denoise(x0, sigma, v)
        x_t = x0 + sigma.view(-1, 1, 1, 1) * self.noise(x0, v.particles)
        live = self.preset.needs_input_grad
        x_in = x_t if live else x_t.detach()
        d_fake, features, logits = None, None, None
        teacher_features = self.head is not None and self.fake is None
        with torch.set_grad_enabled(live):
            with record_function(f"{STAGE}teacher"):
                with mid_block_outputs(self.prior.unet) if teacher_features else nullcontext([]) as seen:
                    d_real = self.teacher_denoise(x_in, sigma, v.cond, v.uncond)
            if seen:  # the ratio head reads the teacher's prompt half of its guided [uncond; cond] batch
                features = seen[-1][len(x_in) :]
            if self.fake is not None:
                with frozen(self.fake), record_function(f"{STAGE}fake"):
                    d_fake = self.fake_denoise(x_in, sigma, v.cond, v.uncond, v.c2w)
                features = self.fake.mid_features
            elif self.empirical:
                with record_function(f"{STAGE}fake"):
                    d_fake = empirical_denoise(x_in, sigma, x0, groups=len(v.particles))
        if self.head is not None and features is not None:
            with torch.no_grad(), record_function(f"{STAGE}ratio_head"):
                logits = self.head(features, sigma)
        return Denoised(x_t=x_t, sigma=sigma, d_real=d_real, d_fake=d_fake, ratio_logits=logits, features=features)

    def extra_loss(self, draw: Draw) -> Tensor:
        """The regularizers (:meth:`regularizer`), summed over the particles drawn."""
        v: Views = draw.context
        regs = [self.regularizer(*args) for args in zip(v.renders, v.origins, v.dirs, v.particles, strict=True)]
        return torch.stack(regs).sum()

    def ratio_logits(self, draw: Draw, denoised: Denoised | None) -> tuple[Tensor, Tensor]:
        """Real = bank latents noised at the generator pass's ``sigma`` (their own views), fake = that pass's
        features (before the LoRA moves, so both sides see the same LoRA). Without a LoRA (``fake_estimator=
        "particles"``) both sides' features are the teacher's prompt-conditioned mid block."""
        assert self.head is not None and self.bank is not None and denoised is not None
        sigma = denoised.sigma
        idx = torch.randint(len(self.bank), (len(sigma),)).to(self.device)
        real = self.bank.latents[idx]
        x_real = real + sigma.view(-1, 1, 1, 1) * torch.randn_like(real)
        cond, _ = self.conditions(self.bank.cameras(idx))
        with torch.no_grad():
            if self.fake is not None:
                self.fake.denoise(x_real, sigma, cond, camera_condition(self.bank.c2w[idx]))
                real_features = self.fake.mid_features
            else:
                with mid_block_outputs(self.prior.unet) as seen:
                    self.prior.denoise(x_real, sigma, cond)
                real_features = seen[-1]
        assert real_features is not None and denoised.features is not None
        return self.head(real_features, sigma), self.head(denoised.features, sigma)

    def fake_score_loss(self, draw: Draw) -> Tensor:
        """The loss of what trains beside the field in the loop's fake-score slot: LMC-SDS's corrective on the
        latest generator pass's pair (:func:`corrective_loss`), else the LoRA denoising loss on ``sg(x0)`` (epsilon
        weighting, at ``lora_t_schedule``'s noise levels, the camera dropped with ``camera_drop``; with fake-score
        guidance the prompt is replaced by the negative prompt with ``text_drop``, so the LoRA also learns the
        unconditional score that guidance needs)."""
        if self.distiller_step is not None and self.corrective is not None:  # LMC-SDS: in the fake score's place
            return self.distiller_step.corrective_loss()
        assert self.fake is not None
        v: Views = draw.context
        x0, cond = draw.x0.detach(), v.cond
        if self.cfg.lora_t_schedule == "generator":
            sigma = self.noise_level(len(x0), v.progress)
        else:
            t = self.lora_timesteps.sample(len(x0), 0.0, self.prior.num_train_timesteps).to(self.device)
            sigma = self.prior.sigma_at(t.float())
        x_t = x0 + sigma.view(-1, 1, 1, 1) * torch.randn_like(x0)
        if self.cfg.fake_guidance_scale != 1.0:
            drop = (torch.rand(len(cond), 1, 1, device=cond.device) < self.cfg.text_drop).to(cond.dtype)
            cond = drop * v.uncond + (1 - drop) * cond
        d = self.fake.denoise(x_t, sigma, cond, camera_condition(v.c2w, self.cfg.camera_drop))
        return fake_score_loss(d, x0, sigma, "eps").mean()

    # ---- one step ------------------------------------------------------------------------------------------------

    def train_step(self) -> StepStats | None:
        """One step of the shared loop; ``None`` when it was rolled back (non-finite), which raises
        :class:`~uni3d.engine.NonFiniteError` after ``max_rollbacks``."""
        result = self.loop.step()
        if result is None:
            return None
        self.losses.append(result.loss)
        v: Views = result.draw.context
        opacity = torch.stack([r.opacity.detach().mean() for r in v.renders]).mean().item()
        t_max = self.timesteps.bounds(v.progress)[1]
        return StepStats(result.loss, result.extra or 0.0, opacity, result.fake_loss, result.ratio_loss, t_max)

    # ---- state -------------------------------------------------------------------------------------------------

    def training_state(self) -> dict[str, Any]:
        """Every trained tensor and optimizer state, and the step (what a rollback restores)."""
        return self.loop.training_state()

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`training_state`."""
        self.loop.load_training_state(state)

    def checkpoint(self, seconds: float) -> dict[str, Any]:
        """:meth:`training_state` plus the bank, counters, loss history, RNG states and training seconds."""
        state = self.training_state()
        state["bank"] = asdict(self.bank) if self.bank is not None else None
        state["counters"] = self.counters.report("rollback")
        state["losses"] = list(self.losses)
        state["rng"] = torch.get_rng_state()
        state["cuda_rng"] = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        state["seconds"] = seconds
        return state

    def load_checkpoint(self, state: dict[str, Any]) -> float:
        """Restore :meth:`checkpoint` (the bank was given to the constructor); returns the training seconds."""
        self.load_training_state(state)
        self.loop.counters = Counters.restore(state["counters"])
        self.losses = list(state["losses"])
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return float(state["seconds"])

    def field_is_finite(self) -> bool:
        """Whether every field and background parameter of every particle is finite (checked before export)."""
        return all(bool(torch.isfinite(p).all()) for r in self.renderers for p in r.parameters())

    @torch.no_grad()
    def preview(self, n_views: int = 4, particle: int = 0) -> Tensor:
        """``(n_views, S, S, 3)`` uint8 orbit renders of ``particle`` at :attr:`shown_size` (eval mode, the run's
        light)."""
        distance = sum(self.cfg.distance) / 2
        orbit = orbit_cameras(n_views, elevation_deg=15.0, distance=distance, size=self.shown_size)
        cams = Cameras(orbit.c2w.to(self.device), orbit.fov_y.to(self.device), orbit.height, orbit.width)
        renderer = self.renderers[particle]
        renderer.eval()
        try:
            rgb = renderer.render_images(cams, light_dir=self.light)["rgb"]
        finally:
            renderer.train()
        return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).cpu()

    def previews(self, n_views: int = 4) -> Tensor:
        """``(particles * n_views, S, S, 3)``: :meth:`preview` of every particle from the same views, in order."""
        return torch.cat([self.preview(n_views, k) for k in range(len(self.renderers))])
