"""Views of a triangle mesh: a z-buffer rasterizer in PyTorch with the scene's camera convention (the
reconstruction task's ground truth, the exported asset's turntable and benchmark tiles).

Each triangle is projected and the pixel centres it covers found with edge functions
(:func:`covered_pixels`; exact under perspective, which maps lines to lines), and the depth of a covered pixel is the exact distance
along that pixel's ray to the triangle's plane, ``t = n.(v0 - o) / n.d``. The nearest triangle wins per pixel
(``scatter_reduce`` amin). Colour is Lambertian, ``albedo (k_a + (1 - k_a) max(0, n.l))``, with a light fixed in
the world (so the image is view-independent radiance a field can learn in ``albedo`` mode) and normals
interpolated from the vertices and flipped to face the camera. ``supersample`` renders at ``s`` times the size
and averages ``s x s`` blocks (anti-aliased RGB and fractional alpha).
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh

from uni3d.export.raster2d import covered_pixels
from uni3d.scene.cameras import Cameras
from uni3d.scene.shading import key_light


def _project(cam: Cameras, verts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates ``(V, 2)`` (column, row; pixel centres at +0.5) and camera-space depth ``-z (V,)``."""
    w2c = torch.linalg.inv(cam.c2w[0])
    p = verts @ w2c[:3, :3].T + w2c[:3, 3]
    depth = -p[:, 2]
    f = cam.focal[0]
    uv = torch.stack([f * p[:, 0] / depth + cam.width / 2, -f * p[:, 1] / depth + cam.height / 2], -1)
    return uv, depth


def rasterize_view(
    cam: Cameras, verts: torch.Tensor, faces: torch.Tensor, vert_normals: torch.Tensor, albedo: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One camera (``len(cam) == 1``): ``rgb (H, W, 3)`` (black where empty) and ``alpha (H, W, 1)``."""
    h, w = cam.height, cam.width
    uv, depth = _project(cam, verts)
    faces = faces[(depth[faces] > 1e-3).all(-1)]
    fid, px, py, _ = covered_pixels(uv[faces], h, w)
    origins, dirs = cam.rays()
    o, d = origins[0, py, px], dirs[0, py, px]
    v = verts[faces[fid]]  # (K, 3, 3)
    n = torch.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)
    denom = (n * d).sum(-1)
    t = (n * (v[:, 0] - o)).sum(-1) / torch.where(denom.abs() < 1e-12, torch.full_like(denom, 1e-12), denom)
    pix = py * w + px
    zbuf = torch.full((h * w,), float("inf")).scatter_reduce(0, pix, t, "amin")
    win = t <= zbuf[pix]
    fid, pix, t, hit, n, d = fid[win], pix[win], t[win], (o + t[:, None] * d)[win], n[win], d[win]
    # barycentric weights of the hit point for normal and albedo interpolation
    bary = _barycentric(verts[faces[fid]], hit)
    vn = (vert_normals[faces[fid]] * bary.unsqueeze(-1)).sum(1)
    facing = torch.where(((n * d).sum(-1, keepdim=True) > 0), -1.0, 1.0)
    vn = torch.nn.functional.normalize(vn * facing, dim=-1)
    col = (albedo[faces[fid]] * bary.unsqueeze(-1)).sum(1)
    light = key_light()
    shade = 0.3 + 0.7 * (vn * light).sum(-1, keepdim=True).clamp(min=0)
    rgb = torch.zeros(h * w, 3)
    alpha = torch.zeros(h * w, 1)
    rgb[pix], alpha[pix] = (col * shade).clamp(0, 1), 1.0
    return rgb.view(h, w, 3), alpha.view(h, w, 1)


def _barycentric(tri: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Barycentric coordinates ``(K, 3)`` of points ``p (K, 3)`` on triangles ``tri (K, 3, 3)``."""
    e0, e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], p - tri[:, 0]
    d00, d01, d11 = (e0 * e0).sum(-1), (e0 * e1).sum(-1), (e1 * e1).sum(-1)
    d20, d21 = (e2 * e0).sum(-1), (e2 * e1).sum(-1)
    den = (d00 * d11 - d01 * d01).clamp(min=1e-20)
    b1, b2 = (d11 * d20 - d01 * d21) / den, (d00 * d21 - d01 * d20) / den
    return torch.stack([1 - b1 - b2, b1, b2], -1).clamp(0, 1)


def rasterize(
    cams: Cameras,
    verts: torch.Tensor,
    faces: torch.Tensor,
    vert_normals: torch.Tensor,
    albedo: torch.Tensor,
    supersample: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All cameras: ``rgb (B, H, W, 3)`` (premultiplied, black background) and ``alpha (B, H, W, 1)``."""
    s = supersample
    big = cams.resized(cams.height * s, cams.width * s)
    rgbs, alphas = [], []
    for i in range(len(cams)):
        rgb, alpha = rasterize_view(big[i], verts, faces, vert_normals, albedo)
        pool = torch.cat([rgb, alpha], -1).permute(2, 0, 1).unsqueeze(0)
        pooled = torch.nn.functional.avg_pool2d(pool, s)[0].permute(1, 2, 0)
        rgbs.append(pooled[..., :3])
        alphas.append(pooled[..., 3:])
    return torch.stack(rgbs), torch.stack(alphas)


DEFAULT_ALBEDO = (0.8, 0.55, 0.3)
"""Albedo of a mesh without vertex colours."""


def rasterize_trimesh(cams: Cameras, mesh: trimesh.Trimesh, supersample: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`rasterize` of a trimesh: its vertex normals, and its vertex colours as the albedo
    (:data:`DEFAULT_ALBEDO` when it has none); premultiplied ``rgb`` and ``alpha``."""
    verts = torch.tensor(np.asarray(mesh.vertices), dtype=torch.float32)
    faces = torch.tensor(np.asarray(mesh.faces), dtype=torch.long)
    normals = torch.tensor(np.asarray(mesh.vertex_normals), dtype=torch.float32)
    if mesh.visual.kind == "vertex":
        albedo = torch.tensor(np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0, dtype=torch.float32)
    else:
        albedo = torch.tensor(DEFAULT_ALBEDO).expand(len(verts), 3)
    return rasterize(cams, verts, faces, normals, albedo, supersample)
