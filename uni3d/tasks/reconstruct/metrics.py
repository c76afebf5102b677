"""Reconstruction metrics: symmetric Chamfer distance between surfaces and PSNR between images.

Chamfer (mean of the two directed mean nearest-neighbour distances between ``n`` area-uniform surface samples
of each mesh) is divided by the source's bounding-box diagonal; both meshes are in the same (scene) units.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import trimesh
from scipy.spatial import cKDTree


def chamfer(
    pred: trimesh.Trimesh, source: trimesh.Trimesh, n: int = 50000, seed: int = 0
) -> tuple[float, float, float]:
    """``(chamfer, pred->source, source->pred)`` mean distances, each divided by the source's bbox diagonal."""
    a, _ = trimesh.sample.sample_surface(pred, n, seed=seed)
    b, _ = trimesh.sample.sample_surface(source, n, seed=seed + 1)
    diag = float(np.linalg.norm(source.extents))
    to_src = float(cKDTree(b).query(a)[0].mean()) / diag
    to_pred = float(cKDTree(a).query(b)[0].mean()) / diag
    return (to_src + to_pred) / 2, to_src, to_pred


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in ``[0, 1]``: ``-10 log10(MSE)``."""
    mse = float(torch.mean((pred.clamp(0, 1) - target.clamp(0, 1)) ** 2))
    return math.inf if mse == 0 else -10 * math.log10(mse)
