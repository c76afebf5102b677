"""Sample quality: FID in the feature net's space, classifier accuracy and entropies of generated digits.

FID (Heusel et al. 2017): ``||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2))``. The trace of the
matrix square root is computed stably as ``sum sqrt(eig(S_1^(1/2) S_2 S_1^(1/2)))`` (a symmetric PSD matrix,
so ``eigh``; tiny negative eigenvalues from rounding are clipped to 0), in float64.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from uni3d.tasks.images.features import FeatureNet


@dataclass(frozen=True)
class FeatureStats:
    """Mean ``[d]`` and covariance ``[d, d]`` (float64) of a feature set."""

    mean: np.ndarray
    cov: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray) -> FeatureStats:
        f = np.asarray(features, dtype=np.float64)
        return cls(f.mean(axis=0), np.cov(f, rowvar=False))


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((m + m.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """Frechet distance between the Gaussians fitted to two feature sets (module docstring)."""
    root = _psd_sqrt(a.cov)
    cross = np.linalg.eigvalsh(root @ b.cov @ root)
    trace_sqrt = float(np.sqrt(np.clip(cross, 0, None)).sum())
    return float(((a.mean - b.mean) ** 2).sum() + np.trace(a.cov) + np.trace(b.cov) - 2 * trace_sqrt)


@torch.no_grad()
def features_and_probs(net: FeatureNet, images: Tensor, batch: int = 500) -> tuple[np.ndarray, Tensor]:
    """Penultimate features (float64 numpy) and class probabilities of ``images`` (clamped to ``[-1, 1]``)."""
    feats, probs = [], []
    for i in range(0, images.shape[0], batch):
        f = net.features(images[i : i + batch].float().clamp(-1, 1))
        feats.append(f)
        probs.append(net.head(f).softmax(1))
    return torch.cat(feats).double().numpy(), torch.cat(probs)


@dataclass(frozen=True)
class SampleScores:
    """FID, accuracy against the requested labels (None when unconditional), mean per-sample entropy (low:
    confident digits), entropy of the mean prediction (``ln 10 = 2.30`` when all classes are equally common)."""

    fid: float
    accuracy: float | None
    entropy: float
    class_entropy: float
    nonfinite: int

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def score_samples(
    net: FeatureNet, images: Tensor, reference: FeatureStats, labels: Tensor | None = None
) -> SampleScores:
    """Scores of generated ``images``; non-finite samples are counted and scored as all-background images."""
    finite = torch.isfinite(images.flatten(1)).all(1)
    images = torch.where(finite[:, None, None, None], images, torch.full_like(images, -1.0))
    feats, probs = features_and_probs(net, images)
    logp = probs.clamp_min(1e-12).log()
    mean_p = probs.mean(0)
    acc = None if labels is None else float((probs.argmax(1) == labels).float().mean())
    return SampleScores(
        fid=frechet_distance(FeatureStats.of(feats), reference),
        accuracy=acc,
        entropy=float(-(probs * logp).sum(1).mean()),
        class_entropy=float(-(mean_p * mean_p.clamp_min(1e-12).log()).sum()),
        nonfinite=int((~finite).sum()),
    )
