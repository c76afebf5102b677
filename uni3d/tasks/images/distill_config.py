"""Settings of one image distillation run, and where the named teacher and feature net live.

Noise levels are log-normal, ``ln sigma ~ N(p_mean, p_std^2)``: ``gen_*`` for the generator loss and the
ratio head (the ratio is needed where the generator loss reads it), ``fake_*`` for the fake score's
denoising loss. Adam's ``beta1 = 0`` follows SiD.

``gen_sigma_min`` truncates the generator's noise levels below: ``sigma ~ LogNormal`` conditioned on
``sigma >= gen_sigma_min``, i.e. the time weighting ``w(t)`` of the generator loss (METHOD.md sections 3-4)
is set to 0 below it (and renormalised above). The ratio head is trained on the same levels. The
ratio-motion and DI terms of the expanded form carry an extra ``1 / sigma^2`` (``grad log r = -y``,
``y = (D_p - D_q) / sigma^2``), so ratio-weighted ``uni-*`` presets (fkl, js, hellinger, ...) diverge without
the cut on the 2-D toy; ``0.3`` in data units (``sigma_data = 0.5``) works there and is the default here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from uni3d.config import build_config
from uni3d.devices import check_device_name
from uni3d.diffusion.edm import heun_steps
from uni3d.errors import UsageError
from uni3d.losses import get_preset
from uni3d.paths import ASSETS

GEN_SIGMAS = ("lognormal", "rho")
NAMED_TEACHERS = {"mnist": ASSETS / "mnist_teacher.pt", "mnist-v1": ASSETS / "mnist_teacher_v1.pt"}
NAMED_FEATURES = {"mnist": ASSETS / "mnist_features.pt"}
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "sample_every", "eval_every", "device")
"""Settings a resumed run may change; any other difference from the saved config is an error."""


@dataclass(frozen=True)
class DistillConfig:
    """Everything a distillation run depends on; saved as ``config.json`` and in every checkpoint."""

    recipe: str = ""
    """The named recipe whose values these are (:mod:`uni3d.tasks.images.recipes`; empty: none)."""
    teacher: str = "mnist"
    data: str = "mnist"
    """Real images (:func:`uni3d.tasks.images.image_data.load_image_data`): ``mnist``, ``none``, an EDM dataset zip
    or folder, or an ``.npz``."""
    preset: str = "uni-jeffreys"
    steps: int = 1000
    warmup_steps: int = 0
    """The first ``warmup_steps`` of ``steps`` train only the fake score and the ratio head (no generator step)."""
    batch_size: int = 32
    seed: int = 0
    sigma_init: float = 2.5
    lr_generator: float = 5e-5
    lr_fake: float = 1e-4
    lr_ratio: float = 3e-4
    adam_beta1: float = 0.0
    gen_sigma: str = "lognormal"
    """The generator's noise levels: ``lognormal`` (``gen_p_mean``, ``gen_p_std``) or ``rho`` (SiD's
    ``t ~ U[0, gen_t_max]`` on EDM's rho-7 schedule, :func:`uni3d.diffusion.edm.rho_time_sigma`); either is cut
    below ``gen_sigma_min``."""
    gen_t_max: float = 0.8
    gen_p_mean: float = -0.5
    gen_p_std: float = 1.0
    gen_sigma_min: float = 0.3
    fake_p_mean: float = -0.5
    fake_p_std: float = 1.2
    ratio_clamp: float = 5.0
    ratio_motion: bool = True
    """Keep the expanded form's ratio-motion and DI terms (exact gradient). ``False`` holds each sample's ``r``
    constant (as clamped samples are), the 3D pipeline's default: ``h(r)`` times the uni-rkl gradient."""
    ratio_width: int = 64
    gan_weight: float = 0.0
    """Weight of SiDA's adversarial generator term (:meth:`~uni3d.tasks.images.distill.ImageDistiller.
    adversarial_loss`); ``> 0`` trains the ratio head as its discriminator whatever the preset."""
    ema: float = 0.995
    grad_clip: float = 10.0
    regression_pairs: int = 256
    regression_nfe: int = 17
    features: str = "mnist"
    """Feature net for FID (a name, a path, or ``none`` to skip the scores)."""
    eval_samples: int = 1000
    eval_seed: int = 1234
    checkpoint_every: int = 50
    sample_every: int = 100
    eval_every: int = 250
    device: str = "cpu"
    """``cpu``, ``cuda[:N]`` or ``auto``; the random numbers are drawn on the CPU either way (a resumed run may switch)."""

    def __post_init__(self) -> None:
        check_device_name(self.device)
        get_preset(self.preset)
        heun_steps(self.regression_nfe)
        if not 0 <= self.warmup_steps <= self.steps:
            raise UsageError(f"need 0 <= warmup steps <= steps, got {self.warmup_steps} and {self.steps}")
        if self.steps < 0 or self.batch_size < 1 or self.eval_samples < 2 or self.regression_pairs < 1:
            raise UsageError(
                f"need steps >= 0, batch size >= 1, eval samples >= 2, regression pairs >= 1; got {self.steps}, "
                f"{self.batch_size}, {self.eval_samples}, {self.regression_pairs}"
            )
        if not 0 <= self.ema < 1 or self.sigma_init <= 0 or self.ratio_clamp <= 0 or not 0 <= self.adam_beta1 < 1:
            raise UsageError(
                f"need 0 <= ema < 1, sigma_init > 0, ratio_clamp > 0, 0 <= adam_beta1 < 1; got {self.ema:g}, "
                f"{self.sigma_init:g}, {self.ratio_clamp:g}, {self.adam_beta1:g}"
            )
        if self.gen_sigma_min < 0 or self.gen_p_std <= 0 or self.fake_p_std <= 0:
            raise UsageError(
                f"need gen_sigma_min >= 0 and positive p_std; got {self.gen_sigma_min:g}, {self.gen_p_std:g}, "
                f"{self.fake_p_std:g}"
            )
        if self.gen_sigma not in GEN_SIGMAS or not 0 < self.gen_t_max <= 1:
            raise UsageError(
                f"need gen_sigma one of {', '.join(GEN_SIGMAS)} and 0 < gen_t_max <= 1; got {self.gen_sigma!r}, "
                f"{self.gen_t_max:g}"
            )
        if min(self.lr_generator, self.lr_fake, self.lr_ratio, self.grad_clip) <= 0:
            raise UsageError("learning rates and grad_clip must be > 0")
        if self.gan_weight < 0:
            raise UsageError(f"need gan_weight >= 0, got {self.gan_weight:g}")
        if min(self.checkpoint_every, self.sample_every, self.eval_every) < 1:
            raise UsageError("checkpoint, sample and eval intervals must be >= 1")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillConfig:
        return build_config(cls, data, "distill")


def resolve_file(spec: str, named: dict[str, Path], run_file: str, what: str, make: str) -> Path:
    """A named asset, a file, or a run folder holding ``run_file``; a one-line error naming the fix otherwise."""
    if spec in named:
        path = named[spec]
        if not path.exists():
            raise UsageError(f"the {what} {spec!r} is not built yet ({path} is missing); make it with: {make}")
        return path
    path = Path(spec)
    if path.is_dir():
        path = path / run_file
    if not path.is_file():
        raise UsageError(f"{what} {spec!r} is neither a name ({', '.join(named)}) nor an existing file or run folder")
    return path
