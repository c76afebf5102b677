"""The toy run's settings: one typed, frozen dataclass; read from YAML/JSON (a saved ``config.json`` too)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from uni3d.config import build_config
from uni3d.errors import UsageError
from uni3d.losses import get_preset
from uni3d.tasks.toy.fit import FitConfig
from uni3d.tasks.toy.teacher import RingTeacher


@dataclass(frozen=True)
class ToyConfig:
    """Everything a toy run depends on; saved (resolved) as ``config.json`` in the run folder.

    Noise levels are log-normal, ``ln sigma ~ N(p_mean, p_std^2)``: ``gen_*`` for the generator loss and
    the ratio head (the ratio is needed where the generator loss evaluates it), ``fake_*`` for the
    fake-score denoising loss (EDM's training distribution). ``gen_sigma_min`` truncates the generator's
    levels from below: the time weighting is zero there (METHOD.md section 4's ``w(t)``), which keeps the
    ratio-motion and DI terms (an extra ``1/sigma^2``) finite. ``fake_steps`` fake-score steps per iteration.
    """

    preset: str = "uni-jeffreys"
    steps: int = 3000
    seed: int = 0
    batch_size: int = 256
    sigma_init: float = 2.5
    lr_generator: float = 1e-4
    lr_fake: float = 3e-4
    lr_ratio: float = 3e-4
    gen_p_mean: float = -0.5
    gen_p_std: float = 1.0
    gen_sigma_min: float = 0.3
    fake_steps: int = 1
    fake_p_mean: float = -0.5
    fake_p_std: float = 1.2
    ratio_clamp: float = 5.0
    ratio_width: int = 128
    ema: float = 0.99
    regression_nfe: int = 35
    regression_pairs: int = 4096
    eval_samples: int = 5000
    eval_seed: int = 1234
    teacher: RingTeacher = field(default_factory=RingTeacher)
    fit: FitConfig = field(default_factory=FitConfig)

    def __post_init__(self) -> None:
        get_preset(self.preset)
        if self.steps < 0 or self.batch_size < 1 or self.eval_samples < 2:
            raise UsageError(
                f"need steps >= 0, batch size >= 1, eval samples >= 2; got {self.steps}, {self.batch_size}, "
                f"{self.eval_samples}"
            )
        if self.gen_sigma_min < 0 or self.fake_steps < 1:
            raise UsageError(
                f"need gen_sigma_min >= 0 and fake_steps >= 1; got {self.gen_sigma_min}, {self.fake_steps}"
            )
        if not 0 <= self.ema < 1 or self.sigma_init <= 0 or self.ratio_clamp <= 0:
            raise UsageError(
                f"need 0 <= ema < 1, sigma_init > 0, ratio_clamp > 0; got {self.ema}, "
                f"{self.sigma_init}, {self.ratio_clamp}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToyConfig:
        """A config from a (possibly partial) mapping; ``teacher`` and ``fit`` may be nested mappings."""
        return build_config(cls, data, "toy")
