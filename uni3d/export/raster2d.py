"""Which pixel centres each 2-D triangle covers: bounding-box candidates tested with edge functions.

Shared by the ground-truth mesh rasterizer (screen space) and the texture baker (UV space).
"""

from __future__ import annotations

import torch


def _edge(p0: torch.Tensor, p1: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (p1[:, 0] - p0[:, 0]) * (q[:, 1] - p0[:, 1]) - (p1[:, 1] - p0[:, 1]) * (q[:, 0] - p0[:, 0])


def covered_pixels(
    tri: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For triangles ``tri (F, 3, 2)`` in pixel units (x = column, y = row; centres at +0.5), every covered pixel:
    ``(face_id, column, row, barycentric (K, 3))``. Either winding counts; degenerate triangles cover nothing."""
    lo = (tri.amin(1) - 0.5).ceil().clamp(min=0).long()
    hi = torch.minimum((tri.amax(1) - 0.5).floor().long(), torch.tensor([width - 1, height - 1]))
    size = (hi - lo + 1).clamp(min=0)
    count = size[:, 0] * size[:, 1]
    fid = torch.repeat_interleave(torch.arange(len(tri)), count)
    local = torch.arange(len(fid)) - torch.repeat_interleave(count.cumsum(0) - count, count)
    cols = size[fid, 0].clamp(min=1)
    px, py = lo[fid, 0] + local % cols, lo[fid, 1] + local // cols
    p = torch.stack([px, py], -1).to(tri.dtype) + 0.5
    a, b, c = tri[fid, 0], tri[fid, 1], tri[fid, 2]
    area = _edge(a, b, c)
    w = torch.stack([_edge(b, c, p), _edge(c, a, p), _edge(a, b, p)], -1)
    inside = ((w >= 0).all(-1) | (w <= 0).all(-1)) & (area.abs() > 1e-12)
    bary = w[inside] / area[inside, None]
    return fid[inside], px[inside], py[inside], bary
