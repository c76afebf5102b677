"""Which EDM preconditioning wraps a network: ``edm`` (EDMPrecond), ``vp`` (VPPrecond), ``ve`` (VEPrecond) or
``iddpm`` (iDDPMPrecond).

``D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)`` with the coefficients of EDM Table 1
(:mod:`uni3d.diffusion.edm`). uni3d's own teachers use ``edm``; ``vp`` / ``ve`` / ``iddpm`` come from EDM's
baseline pickles (``baseline-cifar10-32x32-*-vp.pkl`` / ``-ve.pkl``, ``baseline-imagenet-64x64-cond-adm.pkl``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import Tensor

from uni3d.diffusion.edm import (
    Preconditioning,
    iddpm_preconditioning,
    preconditioning,
    ve_preconditioning,
    vp_preconditioning,
)

KINDS = ("edm", "vp", "ve", "iddpm")


@dataclass(frozen=True)
class Precond:
    """A preconditioning and its constants (``beta_d``, ``beta_min``, ``m``: VPPrecond's schedule; ``c_1``,
    ``c_2``, ``m``: iDDPMPrecond's)."""

    kind: str = "edm"
    beta_d: float = 19.9
    beta_min: float = 0.1
    m: int = 1000
    c_1: float = 0.001
    c_2: float = 0.008

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown preconditioning {self.kind!r}; one of {', '.join(KINDS)}")

    def coefficients(self, sigma: Tensor, sigma_data: float) -> Preconditioning:
        """``c_skip, c_out, c_in, c_noise``, each shaped like ``sigma``."""
        if self.kind == "vp":
            return vp_preconditioning(sigma, self.beta_d, self.beta_min, self.m)
        if self.kind == "ve":
            return ve_preconditioning(sigma)
        if self.kind == "iddpm":
            return iddpm_preconditioning(sigma, self.c_1, self.c_2, self.m)
        return preconditioning(sigma, sigma_data)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


EDM = Precond()
