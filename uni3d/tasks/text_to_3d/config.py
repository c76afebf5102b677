"""Settings of one text-to-3D run: one typed, frozen dataclass; YAML/JSON files (a saved ``config.json`` too).

Defaults are sized for a CPU and the embedded prior (a small field, one view per step, a coarse occupancy
grid, a rank-4 LoRA); a GPU run with Stable Diffusion raises them from a config file or flags. Settings left
``None`` are resolved when the prior is loaded (:meth:`GenerateConfig.resolved`) and saved resolved.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uni3d.config import build_config
from uni3d.devices import check_device_name
from uni3d.diffusion.timesteps import TimestepRange
from uni3d.errors import UsageError
from uni3d.export.asset import ExportSettings
from uni3d.losses import PRESET_NAMES, get_preset
from uni3d.models.prior_source import check_prior_dtype
from uni3d.models.views import VIEWS_FILE
from uni3d.paths import REPO_ROOT
from uni3d.prompt_text import check_prompt
from uni3d.scene.background import BACKGROUNDS
from uni3d.scene.field import FieldConfig
from uni3d.scene.hashgrid import HashGridConfig
from uni3d.scene.shading import SHADING_MODES
from uni3d.tasks.text_to_3d.distillers import DISTILLERS, get_distiller, loss_preset
from uni3d.tasks.text_to_3d.recipes import default_recipe, recipe_settings

EMBEDDED_PRIOR = "assets/priors/shapes"
"""The embedded prior's folder, relative to the repository root (made by ``uni3d train-prior``)."""
EMBEDDED_PRIORS_FOLDER = REPO_ROOT / "assets" / "priors"
"""Where the shipped embedded priors live (the default one and the others, such as the composite one)."""


def is_embedded_prior(prior: str) -> bool:
    """Whether ``prior`` is one of the embedded priors (made by ``uni3d train-prior``: the default, a folder of
    ``assets/priors``, or any folder naming its caption view scheme), which take the ``embedded`` recipe rather
    than a Stable Diffusion one."""
    if prior == EMBEDDED_PRIOR:
        return True
    folder = Path(prior).expanduser()
    if not folder.is_dir():
        return False
    return (folder / VIEWS_FILE).is_file() or folder.resolve().parent == EMBEDDED_PRIORS_FOLDER.resolve()


T_MIN = 0.02
"""Lower end of the generator's timestep range (fraction of ``T``), DreamFusion / threestudio."""
T_MIN_RATIO = 0.2
"""Lower end for presets whose weight ``h(r)`` uses the density ratio: with small ``t`` in the range the
ratio-weighted gradient diverged in the 2-D toy (``w(t) = 0`` below ``t_min`` fixed it)."""
MAX_RENDER_SIZE = 128
"""Largest default render side; a bigger prior image (SD: 512) is reached by bilinear upsampling, as threestudio."""
LIGHTS = ("world", "camera")
NOISE_MODES = ("fresh", "seeded")
LORA_T_SCHEDULES = ("uniform", "generator")
FAKE_ESTIMATORS = ("lora", "particles")
MEMORY_OPTIONS = ("attention_slicing", "channels_last", "vae_slicing")
"""Settings of the prior (:class:`uni3d.models.stable_diffusion.PriorOptions`) that change memory use, not results
(beyond rounding)."""


ADDED_LATER: dict[str, Any] = {
    "particles": 1,
    "particles_per_step": None,
    "t_schedule": "uniform",
    "t_jitter": 0.05,
    "noise": "fresh",
    "recipe": "embedded",
    "render_milestone": None,
    "albedo_until": 0.0,
    "textureless_prob": 0.0,
    "latent_until": 0.0,
    "lora_t_schedule": "uniform",
    "encode_size": None,
    "fake_estimator": "lora",
}
"""Settings added after runs were saved, with the value every earlier run had (resume and run-folder names)."""


def _small_field() -> FieldConfig:
    return FieldConfig(
        encoding=HashGridConfig(n_levels=6, log2_table_size=16, base_resolution=16, max_resolution=128),
        hidden=32,
        blob_density=5.0,
        blob_radius=0.35,
    )


TEXT_TO_3D_PRESETS = (
    *(name for name in PRESET_NAMES if get_preset(name).regression_weight == 0),
    *DISTILLERS,
)
"""Every loss preset but DMD, whose regression to teacher ODE samples has no 3D form, and the step-changing
distillers (:mod:`uni3d.tasks.text_to_3d.distillers`)."""


@dataclass(frozen=True)
class GenerateConfig:
    """Everything a run depends on (METHOD.md section 7); saved resolved as ``config.json`` in the run folder.

    Timesteps: ``t ~ U[t_min, t_max(p)] T`` with ``t_max`` annealed from ``t_max_start`` to ``t_max_end`` by
    progress ``anneal_until`` (:class:`uni3d.diffusion.timesteps.TimestepRange`). The default does not anneal
    (DreamFusion's ``U[0.02, 0.98]`` throughout): annealing early (threestudio's schedule) froze the initial
    blob's sphere on the embedded prior before the shape formed (docs/text_to_3d.md). ``t_min=None`` resolves to
    :data:`T_MIN`, or :data:`T_MIN_RATIO` for ratio-weighted presets. The LoRA fake score trains on
    ``t ~ U[lora_t_min, lora_t_max] T``. ``render_size=None`` resolves to the prior's image side (capped at
    :data:`MAX_RENDER_SIZE`). ``light="world"`` is the embedded prior's key light; ``"camera"`` a headlight.
    ``grid_min_density``: occupancy-grid cells with a lower density are skipped by the ray marcher (and the
    mesh export); 1.0 prunes the initial blob's thin halo (density ``e^-1``), so only the blob itself is
    marched at first (``None``: nerfacc's threshold of 0.01 on ``sigma dt``, which prunes nothing here).

    Regularizers (:meth:`TextTo3D.regularizer`): ``lambda_sparsity`` (opacity), ``lambda_opaque`` (opacity
    entropy), ``lambda_orient`` (normals facing away from the camera) and ``lambda_normal_smooth``: the density
    normal may not turn within ``normal_smooth_eps`` of the surface (threestudio's 3D normal smoothness; without
    it the SDS surface is covered in bumps the 32 px prior cannot see; its weight was chosen on the shapes
    benchmark, docs/text_to_3d.md). Fake score: ``fake_guidance_scale`` ``g`` evaluates the LoRA guided like the teacher, ``D_p^u + g (D_p^c - D_p^u)`` (SiD-LSG; 1 = the prompt-conditioned
    LoRA of ProlificDreamer), the LoRA then trains on the negative prompt with probability ``text_drop``;
    ``fake_warmup_steps``: the first steps train only the LoRA and the ratio head, the field waits.

    ``teacher_jacobian``: whether the expanded (``uni-*``) and SiD forms differentiate through the guided teacher
    ``D_q`` (their exact gradient, as the image distiller does). Off by default, as SDS drops the U-Net Jacobian
    (DreamFusion): under guidance the teacher is not the denoiser of any distribution, and its Jacobian term
    dominates the 3D gradient (``uni3d bench teacher-jacobian``; docs/design.md).
    Without it, ``uni-rkl``'s gradient is ``2 w ((D_p - D_q) - J_pᵀ(D_p - x0))``: VSD's direction plus the fake
    score's Jacobian term. The teacher then
    runs without a backward pass. The fake score is always differentiated.

    ``ratio_motion``: whether the expanded form keeps the terms from the ratio's own motion (``grad log r = -y``:
    the ratio-motion and DI terms, ``h'`` and ``h''``). Off by default in 3D: the ratio then weights each sample as
    a constant, so a ``uni-<f>`` gradient is ``h(r)`` times the ``uni-rkl`` one (the exact gradient of
    ``w E[h(sg r) ||y||^2]``, the form clamped samples get anyway). The ratio-motion term averages out only for an
    exact fake score; the lagging LoRA biases it against the teacher (``uni3d bench fake-bias``; docs/design.md).

    Prior: ``dtype``, ``device``, ``allow_download`` and the memory options ``attention_slicing``,
    ``channels_last``, ``vae_slicing`` (:class:`uni3d.models.stable_diffusion.PriorOptions`; a resumed run may
    change the memory options and the device).
    """

    prompt: str
    prior: str = EMBEDDED_PRIOR
    recipe: str | None = None
    """The named recipe laid under the given settings (:mod:`uni3d.tasks.text_to_3d.recipes`); resolved by
    :meth:`from_dict` from the prior and preset when not given."""
    preset: str = "sds"
    steps: int = 400
    seed: int = 0
    negative_prompt: str = ""
    guidance_scale: float = 7.5
    view_dependent: bool = True
    t_min: float | None = None
    t_max_start: float = 0.98
    t_max_end: float = 0.98
    anneal_until: float = 0.5
    t_schedule: str | None = None
    """``uniform``: ``t ~ U[t_min, t_max(p)] T``; ``descending``: ``t`` falls from ``t_max_start`` to ``t_min`` over
    the run, jittered by ``t_jitter`` (:class:`uni3d.diffusion.timesteps.TimestepRange`).
    ``None``: the preset's own (descending for sdi and dsd), else descending with several particles, else
    uniform."""
    t_jitter: float = 0.05
    noise: str | None = None
    """``fresh``: a new noise ``n`` in ``x_t = x0 + sigma n`` at every step; ``seeded``: each particle keeps one noise
    image for the whole run, drawn from the run's seed and its index, so that with the ``descending`` schedule it
    follows its own seed's path from coarse to fine (Diverse Score Distillation's idea) instead of every particle
    settling in the mode that the start falls towards (docs/text_to_3d.md, coverage). ``None``: seeded with
    several particles (else they are copies of one answer), fresh with one."""
    views_per_step: int = 1
    particles: int = 1
    """Radiance fields optimised together (VSD's particles): the learned fake score and the ratio head train on
    the renders of all of them, so that they fit the particles' distribution rather than one scene."""
    particles_per_step: int | None = None
    """Particles rendered each step, in rotation (``None``: all of them, so the fake score sees every particle
    every step; fewer bound a step's cost when there are many)."""
    render_size: int | None = None
    render_milestone: tuple[float, int] | None = None
    """``(progress, size)``: from that share of the run on, render at that side (threestudio's resolution milestone
    for ProlificDreamer); a share, like ``anneal_until``, so that a recipe's schedule scales with ``steps``."""
    latent_until: float = 0.0
    """The run's first share renders straight into latent space: colour at the latent side, mapped to latents by
    the prior's fitted affine map (:mod:`uni3d.models.latent_rgb`) instead of the VAE encoder (Latent-NeRF's first
    stage, with the same RGB field); 0: never."""
    encode_size: int | None = None
    """The side the VAE encoder sees (``None``: the prior's image side). A smaller one encodes fewer pixels, in the
    forward and in the backward (a 256-pixel encode is a quarter of SD's 512 one), and the latents are resized
    bilinearly to the UNet's side; a multiple of the VAE's downsampling factor, at most the prior's side."""
    elevation_deg: tuple[float, float] = (-10.0, 60.0)
    azimuth_deg: tuple[float, float] = (-180.0, 180.0)
    distance: tuple[float, float] = (2.5, 3.5)
    fov_deg: tuple[float, float] = (35.0, 45.0)
    shading: str = "lambertian"
    albedo_until: float = 0.0
    """The run's first share renders albedo only (threestudio's ``ambient_only_steps``), then ``shading``."""
    textureless_prob: float = 0.0
    """After ``albedo_until``, the share of steps rendered textureless (white albedo, shaded: DreamFusion)."""
    light: str = "world"
    background: str = "solid"
    field: FieldConfig = dataclasses.field(default_factory=_small_field)
    grid_resolution: int = 32
    render_steps: int = 64
    grid_every: int = 16
    grid_min_density: float | None = 1.0
    start_levels: int = 2
    lr: float = 1e-2
    lr_warmup_steps: int = 20
    lr_final: float = 0.1
    grad_clip: float = 100.0
    lambda_sparsity: float = 1e-2
    lambda_opaque: float = 0.0
    lambda_orient: float = 1e-2
    lambda_normal_smooth: float = 5.0
    normal_smooth_eps: float = 0.03
    lora_rank: int = 4
    lr_lora: float = 1e-3
    lora_t_min: float = 0.02
    lora_t_max: float = 0.98
    lora_t_schedule: str = "uniform"
    """Where the LoRA fake score trains: ``uniform``, at ``t ~ U[lora_t_min, lora_t_max] T`` (ProlificDreamer);
    ``generator``, at the generator pass's own noise levels (with the ``descending`` schedule, the band the field's
    gradient reads the fake score in at that point of the run, so the LoRA's capacity goes where it is used)."""
    fake_estimator: str | None = None
    """How presets with a learned fake score get ``D_p``: ``lora``, the camera-conditioned LoRA trained online on
    the particles' renders (ProlificDreamer); ``particles``, the exact denoiser of the particles' renders as an
    empirical distribution (:mod:`uni3d.diffusion.empirical`: every particle is rendered from the same cameras
    each step, no network is trained; a ratio head then reads the teacher's features). With one particle
    ``particles`` is SDS's ``D_p = x0``. ``None``: ``particles`` with several particles (closer to the prior's
    spread of answers than the LoRA, at less cost: docs/text_to_3d.md, coverage), ``lora`` with one."""
    camera_drop: float = 0.1
    fake_guidance_scale: float = 1.0
    fake_warmup_steps: int = 0
    teacher_jacobian: bool = False
    ratio_motion: bool = False
    text_drop: float = 0.1
    ratio_hidden: int = 64
    lr_ratio: float = 1e-3
    ratio_clamp: float = 5.0
    bank_size: int = 4
    bank_nfe: int = 9
    checkpoint_every: int = 50
    snapshot_every: int = 10
    max_rollbacks: int = 20
    preview_every: int = 100
    export: ExportSettings = dataclasses.field(default_factory=ExportSettings)
    device: str = "auto"
    dtype: str = "fp32"
    allow_download: bool = False
    attention_slicing: bool = False
    channels_last: bool = False
    vae_slicing: bool = False

    def __post_init__(self) -> None:
        check_prompt(self.prompt)
        check_prompt(self.negative_prompt, what="the negative prompt", allow_blank=True)
        check_device_name(self.device)
        check_prior_dtype(self.dtype)
        key = (self.preset or "").strip().lower()
        if key not in (*TEXT_TO_3D_PRESETS, *PRESET_NAMES) and not key.startswith(("uni-", "fdistill-")):
            raise UsageError(
                f"unknown preset {self.preset!r}; valid: {', '.join(TEXT_TO_3D_PRESETS)} (uni-<f> and fdistill-<f> "
                "take any divergence)"
            )
        if loss_preset(self.preset).regression_weight > 0:
            raise UsageError(
                f"preset {self.preset!r} regresses onto teacher ODE samples of a one-step generator's noise, which a "
                "3D field does not have; use sds, vsd, di, sid, sim, uni-<f> or fdistill-<f>"
            )
        checks = {
            "steps >= 1": self.steps >= 1,
            "seed >= 0": self.seed >= 0,
            "views_per_step >= 1": self.views_per_step >= 1,
            "particles >= 1": self.particles >= 1,
            "1 <= particles_per_step <= particles": self.particles_per_step is None
            or 1 <= self.particles_per_step <= self.particles,
            "guidance_scale >= 0": self.guidance_scale >= 0,
            "0 <= lora_t_min < lora_t_max <= 1": 0 <= self.lora_t_min < self.lora_t_max <= 1,
            "0 <= camera_drop <= 1 and 0 <= text_drop <= 1": 0 <= self.camera_drop <= 1 and 0 <= self.text_drop <= 1,
            "fake_guidance_scale >= 1": self.fake_guidance_scale >= 1,
            "0 <= fake_warmup_steps < steps": 0 <= self.fake_warmup_steps < self.steps,
            "positive learning rates": min(self.lr, self.lr_lora, self.lr_ratio) > 0,
            "0 < lr_final <= 1": 0 < self.lr_final <= 1,
            "non-negative regularizer weights": min(
                self.lambda_sparsity, self.lambda_opaque, self.lambda_orient, self.lambda_normal_smooth
            )
            >= 0,
            "normal_smooth_eps > 0": self.normal_smooth_eps > 0,
            "lora_rank >= 1 and ratio_hidden >= 4": self.lora_rank >= 1 and self.ratio_hidden >= 4,
            "bank_size >= 1 and odd bank_nfe >= 1": self.bank_size >= 1 and self.bank_nfe >= 1 and self.bank_nfe % 2,
            "positive checkpoint/snapshot/preview intervals": min(
                self.checkpoint_every, self.snapshot_every, self.preview_every, self.grid_every
            )
            >= 1,
            "render_size 16-1024": self.render_size is None or 16 <= self.render_size <= 1024,
            "render_milestone (progress in (0, 1], size 16-1024)": self.render_milestone is None
            or (0 < self.render_milestone[0] <= 1 and 16 <= self.render_milestone[1] <= 1024),
            "0 <= latent_until <= 1": 0 <= self.latent_until <= 1,
            "encode_size 8-1024": self.encode_size is None or 8 <= self.encode_size <= 1024,
            "0 <= albedo_until <= 1 and 0 <= textureless_prob <= 1": 0 <= self.albedo_until <= 1
            and 0 <= self.textureless_prob <= 1,
            "grid_min_density > 0": self.grid_min_density is None or self.grid_min_density > 0,
            f"noise one of {', '.join(NOISE_MODES)}": self.noise is None or self.noise in NOISE_MODES,
            f"lora_t_schedule one of {', '.join(LORA_T_SCHEDULES)}": self.lora_t_schedule in LORA_T_SCHEDULES,
            f"fake_estimator one of {', '.join(FAKE_ESTIMATORS)}": self.fake_estimator is None
            or self.fake_estimator in FAKE_ESTIMATORS,
        }
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            raise UsageError(f"invalid generate settings: need {'; '.join(failed)}")
        if self.shading not in SHADING_MODES or self.background not in BACKGROUNDS or self.light not in LIGHTS:
            raise UsageError(
                f"shading, background, light must be one of {SHADING_MODES}, {BACKGROUNDS}, {LIGHTS}; "
                f"got {self.shading!r}, {self.background!r}, {self.light!r}"
            )
        self.timestep_range()  # validates the range
        if self.fake_estimator == "particles" and not self.has_fake_estimator:
            raise UsageError(
                f"fake_estimator 'particles' replaces a learned fake score, which preset {self.preset!r} does not "
                "have: use vsd, di, sid, sim, uni-<f> or fdistill-<f>"
            )

    @property
    def prior_path(self) -> str:
        """The prior as given, except that the embedded default is found from any working directory."""
        return str(REPO_ROOT / EMBEDDED_PRIOR) if self.prior == EMBEDDED_PRIOR else self.prior

    def timestep_range(self) -> TimestepRange:
        """The generator's :class:`uni3d.diffusion.timesteps.TimestepRange`."""
        return TimestepRange(
            self.resolved_t_min(),
            self.t_max_start,
            self.t_max_end,
            self.anneal_until,
            schedule=self.resolved_t_schedule(),
            jitter=self.t_jitter,
        )

    def resolved_noise(self) -> str:
        """``noise``, or its default by particle count (see the field)."""
        return self.noise or ("seeded" if self.particles > 1 else "fresh")

    def resolved_t_schedule(self) -> str:
        """``t_schedule``, or its default by particle count (see the field)."""
        if self.t_schedule is not None:
            return self.t_schedule
        distiller = get_distiller(self.preset)
        if distiller is not None and distiller.t_schedule != "uniform":
            return distiller.t_schedule
        return "descending" if self.particles > 1 else "uniform"

    @property
    def has_fake_estimator(self) -> bool:
        """Whether ``fake_estimator`` applies: a loss preset with a learned fake score (not a step-changing
        distiller)."""
        return loss_preset(self.preset).fake_score == "learned" and get_distiller(self.preset) is None

    def resolved_fake_estimator(self) -> str:
        """``fake_estimator``, or its default by particle count for presets with a learned fake score (see the
        field); ``lora``, the inert value, for the others."""
        if self.fake_estimator is not None:
            return self.fake_estimator
        return "particles" if self.has_fake_estimator and self.particles > 1 else "lora"

    def resolved_t_min(self) -> float:
        """``t_min``, or its default by preset (see the class docstring)."""
        if self.t_min is not None:
            return self.t_min
        return T_MIN_RATIO if loss_preset(self.preset).uses_ratio else T_MIN

    def inert_settings(self) -> frozenset[str]:
        """Settings without effect for this preset: ``teacher_jacobian`` where no denoiser input is live (integral
        presets), ``ratio_motion`` where no ratio is used. A run folder made before they existed still resumes."""
        preset = loss_preset(self.preset)
        inert = set() if preset.needs_input_grad else {"teacher_jacobian"}
        return frozenset(inert if preset.uses_ratio else inert | {"ratio_motion"})

    def resolved(self, prior_image_size: int) -> GenerateConfig:
        """A copy with every ``None`` setting decided (``prior_image_size``: the prior's image side in pixels)."""
        size = self.render_size or min(prior_image_size, MAX_RENDER_SIZE)
        return dataclasses.replace(
            self,
            t_min=self.resolved_t_min(),
            render_size=size,
            noise=self.resolved_noise(),
            t_schedule=self.resolved_t_schedule(),
            fake_estimator=self.resolved_fake_estimator(),
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able settings (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerateConfig:
        """A config from a (possibly partial, possibly nested) mapping, e.g. a saved ``config.json``, laid over its
        recipe: the one it names, else the default of its prior and preset (:func:`default_recipe`)."""
        if not isinstance(data, dict):
            return build_config(cls, data, "generate")  # its one-line error
        prior, preset = data.get("prior", EMBEDDED_PRIOR), data.get("preset", "sds")
        name = data.get("recipe") or default_recipe(str(preset), embedded=is_embedded_prior(str(prior)))
        base = recipe_settings(str(name))
        field = {**base.get("field", {}), **(data.get("field") or {})} if "field" in base else data.get("field")
        merged = {**base, **data, "recipe": name}
        if field is not None:
            merged["field"] = field
        return build_config(cls, merged, "generate")
