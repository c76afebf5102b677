"""The f-divergence family of METHOD.md section 2.

``D_f(q || p) = E_p[f(q / p)]`` with the density ratio ``r = q / p`` (teacher over generator). The
gradients of section 3 and 4 only need ``h(r) = r^2 f''(r)`` and its derivatives, so every divergence
exposes the five columns of the table: ``f``, ``h``, ``h'``, ``r^2 h''`` and ``h - r h'``.

Names: ``rkl``, ``fkl``, ``jeffreys`` (alias ``jkl``), ``js``, ``chi2``, ``hellinger``, ``alpha(a)``, and
weighted mixtures such as ``0.4*fkl+0.6*rkl`` (every column is linear in ``f``).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from uni3d.errors import UsageError


class Divergence(ABC):
    """One ``f``; each method takes the ratio ``r`` (any shape, positive) and returns a tensor of its shape."""

    name: str

    @abstractmethod
    def f(self, r: Tensor) -> Tensor:
        """The generator ``f`` of ``D_f(q||p) = E_p[f(r)]``."""

    @abstractmethod
    def h(self, r: Tensor) -> Tensor:
        """``h(r) = r^2 f''(r)``: the weight of ``s_p - s_q`` in the integral form (section 3)."""

    @abstractmethod
    def h_prime(self, r: Tensor) -> Tensor:
        """``h'(r)``."""

    @abstractmethod
    def r2_h2(self, r: Tensor) -> Tensor:
        """``r^2 h''(r)``: the coefficient of the "DI" term of the expanded form (section 4)."""

    def rh_prime(self, r: Tensor) -> Tensor:
        """``r h'(r)``: the coefficient of the ratio-motion term of the expanded form (section 4)."""
        return r * self.h_prime(r)

    @property
    def uses_ratio(self) -> bool:
        """False when ``h`` is constant (``rkl``): then ``r`` never enters the gradient."""
        return True


@dataclass(frozen=True)
class ReverseKL(Divergence):
    """KL(p||q): ``f = -log r``, ``h = 1`` (Diff-Instruct, VSD, SiD)."""

    name: str = "rkl"

    def f(self, r: Tensor) -> Tensor:
        return -torch.log(r)

    def h(self, r: Tensor) -> Tensor:
        return torch.ones_like(r)

    def h_prime(self, r: Tensor) -> Tensor:
        return torch.zeros_like(r)

    def r2_h2(self, r: Tensor) -> Tensor:
        return torch.zeros_like(r)

    @property
    def uses_ratio(self) -> bool:
        return False


@dataclass(frozen=True)
class ForwardKL(Divergence):
    """KL(q||p): ``f = r log r``, ``h = r``."""

    name: str = "fkl"

    def f(self, r: Tensor) -> Tensor:
        return torch.special.xlogy(r, r)

    def h(self, r: Tensor) -> Tensor:
        return r

    def h_prime(self, r: Tensor) -> Tensor:
        return torch.ones_like(r)

    def r2_h2(self, r: Tensor) -> Tensor:
        return torch.zeros_like(r)


@dataclass(frozen=True)
class Jeffreys(Divergence):
    """KL(p||q) + KL(q||p): ``f = (r - 1) log r``, ``h = r + 1``."""

    name: str = "jeffreys"

    def f(self, r: Tensor) -> Tensor:
        return (r - 1) * torch.log(r)

    def h(self, r: Tensor) -> Tensor:
        return r + 1

    def h_prime(self, r: Tensor) -> Tensor:
        return torch.ones_like(r)

    def r2_h2(self, r: Tensor) -> Tensor:
        return torch.zeros_like(r)


@dataclass(frozen=True)
class JensenShannon(Divergence):
    """Jensen-Shannon: ``f = r log r - (r + 1) log((r + 1) / 2)``, ``h = r / (r + 1)``."""

    name: str = "js"

    def f(self, r: Tensor) -> Tensor:
        return torch.special.xlogy(r, r) - (r + 1) * torch.log((r + 1) / 2)

    def h(self, r: Tensor) -> Tensor:
        return r / (r + 1)

    def h_prime(self, r: Tensor) -> Tensor:
        return (r + 1).pow(-2)

    def r2_h2(self, r: Tensor) -> Tensor:
        return -2 * r.pow(2) / (r + 1).pow(3)


@dataclass(frozen=True)
class PearsonChi2(Divergence):
    """Pearson chi-squared: ``f = (r - 1)^2``, ``h = 2 r^2``."""

    name: str = "chi2"

    def f(self, r: Tensor) -> Tensor:
        return (r - 1).pow(2)

    def h(self, r: Tensor) -> Tensor:
        return 2 * r.pow(2)

    def h_prime(self, r: Tensor) -> Tensor:
        return 4 * r

    def r2_h2(self, r: Tensor) -> Tensor:
        return 4 * r.pow(2)


@dataclass(frozen=True)
class SquaredHellinger(Divergence):
    """Squared Hellinger: ``f = (sqrt(r) - 1)^2``, ``h = sqrt(r) / 2``."""

    name: str = "hellinger"

    def f(self, r: Tensor) -> Tensor:
        return (r.sqrt() - 1).pow(2)

    def h(self, r: Tensor) -> Tensor:
        return r.sqrt() / 2

    def h_prime(self, r: Tensor) -> Tensor:
        return r.rsqrt() / 4

    def r2_h2(self, r: Tensor) -> Tensor:
        return -r.sqrt() / 8


@dataclass(frozen=True)
class Alpha(Divergence):
    """Amari alpha: ``f = (r^a - 1 - a (r - 1)) / (a (a - 1))``, ``h = r^a`` (``a`` not 0 or 1: those are KLs)."""

    a: float = 0.5
    name: str = ""

    def __post_init__(self) -> None:
        if self.a in (0.0, 1.0):
            raise UsageError(f"alpha({self.a:g}) is a limit case: use 'rkl' (a=0) or 'fkl' (a=1)")
        object.__setattr__(self, "name", f"alpha({self.a:g})")

    def f(self, r: Tensor) -> Tensor:
        a = self.a
        return (r.pow(a) - 1 - a * (r - 1)) / (a * (a - 1))

    def h(self, r: Tensor) -> Tensor:
        return r.pow(self.a)

    def h_prime(self, r: Tensor) -> Tensor:
        return self.a * r.pow(self.a - 1)

    def r2_h2(self, r: Tensor) -> Tensor:
        return self.a * (self.a - 1) * r.pow(self.a)


@dataclass(frozen=True)
class Mixture(Divergence):
    """``sum_i w_i f_i``: every column of the table is the same weighted sum."""

    terms: tuple[tuple[float, Divergence], ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", "+".join(f"{w:g}*{d.name}" for w, d in self.terms))

    def _sum(self, method: str, r: Tensor) -> Tensor:
        return sum(w * getattr(d, method)(r) for w, d in self.terms)  # type: ignore[return-value]

    def f(self, r: Tensor) -> Tensor:
        return self._sum("f", r)

    def h(self, r: Tensor) -> Tensor:
        return self._sum("h", r)

    def h_prime(self, r: Tensor) -> Tensor:
        return self._sum("h_prime", r)

    def r2_h2(self, r: Tensor) -> Tensor:
        return self._sum("r2_h2", r)

    @property
    def uses_ratio(self) -> bool:
        return any(d.uses_ratio for _, d in self.terms)


NAMED: dict[str, Divergence] = {
    "rkl": ReverseKL(),
    "fkl": ForwardKL(),
    "jeffreys": Jeffreys(),
    "jkl": Jeffreys(),
    "js": JensenShannon(),
    "chi2": PearsonChi2(),
    "hellinger": SquaredHellinger(),
}
"""The named divergences; ``alpha(a)`` and mixtures are parsed by :func:`get_divergence`."""

_ALPHA = re.compile(r"alpha\(\s*([-+0-9.eE]+)\s*\)")
_TERM = re.compile(r"\s*(?:([0-9.eE+-]+)\s*\*\s*)?(.+?)\s*")
VALID_DIVERGENCES = "rkl, fkl, jeffreys (jkl), js, chi2, hellinger, alpha(a), or a mixture like 0.4*fkl+0.6*rkl"


def _single(spec: str) -> Divergence:
    key = spec.strip().lower()
    if key in NAMED:
        return NAMED[key]
    match = _ALPHA.fullmatch(key)
    if match:
        try:
            a = float(match.group(1))
        except ValueError:
            raise UsageError(f"cannot read the alpha parameter in {spec.strip()!r}; write e.g. alpha(0.5)") from None
        return Alpha(a)
    raise UsageError(f"unknown divergence {spec.strip()!r}; valid: {VALID_DIVERGENCES}")


def get_divergence(spec: str) -> Divergence:
    """Parse a divergence name, ``alpha(a)``, or a weighted mixture ``w1*name1+w2*name2``."""
    if not spec or not spec.strip():
        raise UsageError(f"empty divergence name; valid: {VALID_DIVERGENCES}")
    parts = re.split(r"(?<![eE(])\+(?![^(]*\))", spec)
    if len(parts) == 1 and "*" not in spec:
        return _single(spec)
    terms: list[tuple[float, Divergence]] = []
    for part in parts:
        match = _TERM.fullmatch(part)
        if not match or not part.strip():
            raise UsageError(f"cannot read mixture term {part.strip()!r} in {spec!r}; valid: {VALID_DIVERGENCES}")
        try:
            weight = float(match.group(1)) if match.group(1) else 1.0
        except ValueError:
            raise UsageError(f"cannot read mixture weight {match.group(1)!r} in {spec!r}") from None
        if weight < 0:
            raise UsageError(f"mixture weight {weight:g} in {spec!r} is negative: the result is not a divergence")
        terms.append((weight, _single(match.group(2))))
    return Mixture(tuple(terms))
