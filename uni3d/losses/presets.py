"""Named presets: the one place that maps a method's name to its loss settings (METHOD.md sections 3-5, 7).

| preset          | form     | divergence | fake score  | ratio          | weighting | extra                   |
|-----------------|----------|------------|-------------|----------------|-----------|-------------------------|
| sds             | integral | rkl        | conditional | none           | sds       | DreamFusion             |
| vsd             | integral | rkl        | learned     | none           | sds       | ProlificDreamer         |
| di              | integral | rkl        | learned     | none           | data      | Diff-Instruct           |
| dmd             | integral | rkl        | learned     | none           | sid       | + 0.25 x regression     |
| sid             | sid      | (rkl)      | learned     | none           | sid       | alpha = 1.2             |
| sim             | sid      | (rkl)      | learned     | none           | sid       | alpha = 1 (L2 SIM)      |
| fdistill-<f>    | integral | f          | learned     | discriminator  | sid       | f-distill               |
| uni-<f>         | expanded | f          | learned     | discriminator  | sid       | Uni-Instruct            |

``<f>`` is any divergence :func:`~uni3d.losses.divergences.get_divergence` reads (``alpha(0.5)``, mixtures
too); a divergence whose ``h`` is constant (``rkl``) needs no ratio, so its presets skip the discriminator.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from uni3d.errors import UsageError
from uni3d.losses.divergences import Divergence, ReverseKL, get_divergence
from uni3d.losses.weighting import WEIGHTINGS

Form = Literal["integral", "expanded", "sid"]
FAMILY_DIVERGENCES: tuple[str, ...] = ("rkl", "fkl", "jeffreys", "js", "chi2", "hellinger")


@dataclass(frozen=True)
class Preset:
    """Settings of one generator loss.

    Attributes:
        name: the preset's name.
        form: ``integral`` (section 3), ``expanded`` (section 4) or ``sid`` (SiD's alpha family).
        divergence: the f-divergence.
        fake_score: ``learned`` (an online fake-score network) or ``conditional`` (SDS: ``c`` in place of ``s_p``).
        weighting: the time weighting (see :mod:`uni3d.losses.weighting`).
        alpha: SiD's alpha (``sid`` form only).
        regression_weight: weight of DMD's regression to teacher ODE samples (0: off).
    """

    name: str
    form: Form
    divergence: Divergence
    fake_score: Literal["learned", "conditional"] = "learned"
    weighting: str = "sid"
    alpha: float = 1.2
    regression_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise UsageError(f"unknown weighting {self.weighting!r}; valid: {', '.join(WEIGHTINGS)}")
        if self.regression_weight < 0:
            raise UsageError(f"regression_weight must be >= 0, got {self.regression_weight:g}")

    @property
    def uses_ratio(self) -> bool:
        """Whether the density ratio ``r`` enters the gradient (then a discriminator is trained)."""
        return self.form != "sid" and self.divergence.uses_ratio

    @property
    def needs_input_grad(self) -> bool:
        """Whether the denoisers must run with a live input ``x_t`` (expanded and SiD forms)."""
        return self.form != "integral"

    @property
    def order(self) -> int:
        """Powers of the score difference in the loss (1 integral, 2 expanded/SiD): sets the weighting units."""
        return 1 if self.form == "integral" else 2

    def with_options(self, **changes: object) -> Preset:
        """A copy with some settings changed (e.g. ``weighting="data"``), validated again."""
        return replace(self, **changes)  # type: ignore[arg-type]


_RKL = ReverseKL()
_FIXED: dict[str, Preset] = {
    "sds": Preset("sds", "integral", _RKL, fake_score="conditional", weighting="sds"),
    "vsd": Preset("vsd", "integral", _RKL, weighting="sds"),
    "di": Preset("di", "integral", _RKL, weighting="data"),
    "dmd": Preset("dmd", "integral", _RKL, weighting="sid", regression_weight=0.25),
    "sid": Preset("sid", "sid", _RKL, alpha=1.2),
    "sim": Preset("sim", "sid", _RKL, alpha=1.0),
}
_FAMILIES: dict[str, Form] = {"uni-": "expanded", "fdistill-": "integral"}

PRESET_NAMES: tuple[str, ...] = (
    *_FIXED,
    *(f"fdistill-{f}" for f in FAMILY_DIVERGENCES),
    *(f"uni-{f}" for f in FAMILY_DIVERGENCES),
)


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ``uni-<f>`` / ``fdistill-<f>`` accept any divergence spec for ``<f>``."""
    key = (name or "").strip().lower()
    if key in _FIXED:
        return _FIXED[key]
    for prefix, form in _FAMILIES.items():
        if key.startswith(prefix):
            try:
                divergence = get_divergence(key[len(prefix) :])
            except UsageError as err:
                raise UsageError(f"unknown preset {name!r}: {err}") from None
            return Preset(key, form, divergence)
    raise UsageError(
        f"unknown preset {name!r}; valid: {', '.join(PRESET_NAMES)} (uni-<f> and fdistill-<f> take any divergence)"
    )
