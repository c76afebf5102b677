"""Sample quality on the ring: energy distance to the target (and its finite-sample floor), mode coverage.

Energy distance (Szekely & Rizzo): ``ED(X, Y) = 2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (the squared form,
zero iff the distributions agree), estimated with V-statistics over all pairs. Two finite samples of
the *same* distribution still give ``ED > 0``; that value, for a sample of the target of the same size,
is the floor no generator can beat on average.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from uni3d.tasks.toy.teacher import RingTeacher

NEAR_STDS = 3.0
"""A sample is "near" a mode when it lies within this many component standard deviations of its centre."""
MIN_MODE_SHARE = 0.05
"""A mode counts as covered when at least this share of all samples lies near it (a perfect sampler: 1/K)."""


def _mean_distance(a: Tensor, b: Tensor, chunk: int = 2048) -> float:
    """``E|a - b|`` over all pairs, float64, in row chunks to bound memory."""
    a64, b64 = a.double(), b.double()
    total = sum(torch.cdist(a64[i : i + chunk], b64).sum().item() for i in range(0, a64.shape[0], chunk))
    return total / (a64.shape[0] * b64.shape[0])


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Squared energy distance between samples ``x [N, d]`` and ``y [M, d]`` (V-statistic)."""
    return 2 * _mean_distance(x, y) - _mean_distance(x, x) - _mean_distance(y, y)


@dataclass(frozen=True)
class ModeStats:
    """Share of samples near each mode, and the summaries reported in benchmarks."""

    shares: tuple[float, ...]
    modes_covered: int
    near_share: float


def mode_stats(x: Tensor, teacher: RingTeacher) -> ModeStats:
    """Assign each sample to its nearest mode; count it if within ``NEAR_STDS`` stds (non-finite: never near)."""
    dist = torch.cdist(x.double(), teacher.means(torch.float64))
    nearest = dist.nan_to_num(float("inf")).min(dim=1)
    near = nearest.values <= NEAR_STDS * teacher.std
    counts = torch.bincount(nearest.indices[near], minlength=teacher.n_modes)
    shares = tuple((counts.double() / x.shape[0]).tolist())
    covered = sum(s >= MIN_MODE_SHARE for s in shares)
    return ModeStats(shares, covered, float(near.double().mean()))


@dataclass(frozen=True)
class SampleMetrics:
    """What the toy reports for one sampler. ``energy_distance`` is ``None`` when any sample is non-finite."""

    energy_distance: float | None
    floor: float
    modes_covered: int
    n_modes: int
    near_share: float
    mode_shares: tuple[float, ...]
    nonfinite: int
    n_samples: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def evaluate(samples: Tensor, reference: Tensor, floor: float, teacher: RingTeacher) -> SampleMetrics:
    """Metrics of ``samples`` against a ``reference`` sample of the target, with its precomputed ``floor``."""
    finite = torch.isfinite(samples).all(dim=1)
    nonfinite = int((~finite).sum())
    ed = energy_distance(samples, reference) if nonfinite == 0 else None
    stats = mode_stats(samples, teacher)
    return SampleMetrics(
        energy_distance=ed,
        floor=floor,
        modes_covered=stats.modes_covered,
        n_modes=teacher.n_modes,
        near_share=stats.near_share,
        mode_shares=stats.shares,
        nonfinite=nonfinite,
        n_samples=samples.shape[0],
    )


@dataclass(frozen=True)
class Reference:
    """A fixed target sample to compare against and the floor: ED of a second, independent target sample."""

    samples: Tensor
    floor: float


def make_reference(teacher: RingTeacher, n: int, seed: int) -> Reference:
    """Two independent target samples of size ``n`` from ``seed``; the floor is their energy distance."""
    gen = torch.Generator().manual_seed(seed)
    reference, other = teacher.sample(n, gen), teacher.sample(n, gen)
    return Reference(reference, energy_distance(other, reference))
