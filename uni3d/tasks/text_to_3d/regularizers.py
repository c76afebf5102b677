"""The text-to-3D step's regularizers on the rendered field: sparsity, opaque-or-empty entropy, normal orientation
(DreamFusion) and normal smoothness (threestudio); the trainer adds them to the distillation loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from uni3d.scene.field import RadianceField
from uni3d.tasks.text_to_3d.config import GenerateConfig

SPARSITY_EPS = 0.01
"""``sqrt(o^2 + eps)``: the smooth L1 of threestudio's sparsity loss on the opacity ``o``."""


def regularizers(cfg: GenerateConfig, opacity: Tensor, normal: Tensor | None, dirs: Tensor) -> Tensor:
    """``l_s mean sqrt(o^2 + eps)`` (sparsity) + ``l_o mean H(o)`` (binary entropy: opaque or empty) +
    ``l_n mean max(0, n.d)^2`` (orientation, DreamFusion eq. in appendix A.2, on the composited normal
    ``n = sum w_i n_i``: by Jensen a lower bound of the per-sample form ``sum w_i max(0, n_i.d)^2``)."""
    reg = cfg.lambda_sparsity * (opacity.square() + SPARSITY_EPS).sqrt().mean()
    if cfg.lambda_opaque > 0:
        o = opacity.clamp(1e-4, 1 - 1e-4)
        reg = reg - cfg.lambda_opaque * (o * o.log() + (1 - o) * (1 - o).log()).mean()
    if normal is not None and cfg.lambda_orient > 0:
        reg = reg + cfg.lambda_orient * F.relu((normal * dirs).sum(-1)).square().mean()
    return reg


def surface_points(origins: Tensor, dirs: Tensor, opacity: Tensor, depth: Tensor) -> Tensor:
    """``(M, 3)`` points where the rays of opacity above 1/2 meet the surface, ``o + (depth / opacity) d``
    (the expected distance of the opaque part); detached."""
    hit = opacity.squeeze(-1) > 0.5
    distance = depth[hit] / opacity[hit]
    return (origins[hit] + distance * dirs[hit]).detach()


def normal_smoothness(field: RadianceField, points: Tensor, eps: float) -> Tensor:
    """``mean |n(x) - n(x + eps u)|_1``, ``u ~ N(0, I)``, over surface points ``x`` (threestudio's 3D normal
    smoothness): penalises the density normals turning within ``eps``, i.e. bumps smaller than ``eps``."""
    if len(points) == 0:
        return points.new_zeros(())
    jittered = points + eps * torch.randn_like(points)
    *_, normals = field.forward_with_normals(torch.cat([points, jittered]))
    n, n_jittered = normals.chunk(2)
    return (n - n_jittered).abs().sum(-1).mean()
