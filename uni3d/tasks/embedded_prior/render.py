"""Analytic views of primitives, alone or as a union of placed parts: sphere tracing along the camera rays.

Rays come from :meth:`uni3d.scene.Cameras.rays` (the optimizer's convention). Each ray starts where it enters
the ball of radius :data:`~uni3d.tasks.embedded_prior.primitives.BOUND_RADIUS` and steps ``t <- t + d(o + t d)`` (sphere
tracing, Hart 1996), which never crosses the surface because ``d`` is a distance lower bound. A ray hits when
``d < eps``. Normals are the normalised central-difference gradient of ``d``; colour is the scene's Lambertian
shading ``a (k_a + (1 - k_a) max(0, n.l))`` (:func:`uni3d.scene.shading.shade`) under the world key light of
the reconstruction views, composited on a white background. ``supersample`` traces ``s x s`` rays per pixel
and averages them (anti-aliased RGB and fractional alpha).
"""

from __future__ import annotations

import torch

from uni3d.scene.cameras import Cameras
from uni3d.scene.shading import key_light, shade
from uni3d.tasks.embedded_prior.primitives import BOUND_RADIUS, SdfFn

AMBIENT = 0.3
"""``k_a`` of the Lambertian shading (the scene renderer's default)."""


def _sdf_normals(sdf: SdfFn, p: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Unit normals ``(N, 3)``: central differences of ``sdf`` at ``p (N, 3)``."""
    offsets = torch.eye(3, dtype=p.dtype, device=p.device) * eps
    grad = torch.stack([sdf(p + o) - sdf(p - o) for o in offsets], -1)
    return torch.nn.functional.normalize(grad, dim=-1)


def sphere_trace(
    sdf: SdfFn, origins: torch.Tensor, dirs: torch.Tensor, steps: int = 64, eps: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hit mask ``(N,)`` and hit points ``(N, 3)`` of unit-direction rays ``origins, dirs (N, 3)``."""
    # entry into the bounding ball: |o + t d|^2 = R^2
    b = (origins * dirs).sum(-1)
    disc = b.pow(2) - (origins.pow(2).sum(-1) - BOUND_RADIUS**2)
    hit = torch.zeros(len(origins), dtype=torch.bool, device=origins.device)
    points = torch.zeros_like(origins)
    live = (disc > 0).nonzero().squeeze(-1)
    o, d = origins[live], dirs[live]
    t = (-b[live] - disc[live].clamp(min=0).sqrt()).clamp(min=0)
    t_far = -b[live] + disc[live].clamp(min=0).sqrt()
    for _ in range(steps):
        t = t + sdf(o + t.unsqueeze(-1) * d)
    p = o + t.unsqueeze(-1) * d
    ok = (sdf(p).abs() < eps) & (t < t_far)
    hit[live], points[live] = ok, p
    return hit, points


def render_primitive(
    sdf: SdfFn, albedo: torch.Tensor, cameras: Cameras, supersample: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Views of one primitive, view ``b`` in colour ``albedo[b]`` (``albedo (B, 3)``).

    Returns ``rgb (B, H, W, 3)`` in ``[0, 1]`` and ``alpha (B, H, W)``.
    """
    return render_parts([sdf], albedo.unsqueeze(1), cameras, supersample=supersample)


def render_parts(
    sdfs: list[SdfFn], albedo: torch.Tensor, cameras: Cameras, *, supersample: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Views of the union of parts ``sdfs``, part ``i`` of view ``b`` in colour ``albedo[b, i]`` (``(B, P, 3)``).

    The union is traced as the minimum of the parts' bounds; a hit takes the colour of the part nearest to it.
    Returns ``rgb (B, H, W, 3)`` in ``[0, 1]`` and ``alpha (B, H, W)``.
    """
    s = supersample

    def union(p: torch.Tensor) -> torch.Tensor:
        return torch.stack([f(p) for f in sdfs]).amin(0)

    hi = cameras.resized(cameras.height * s, cameras.width * s)
    origins, dirs = (x.reshape(-1, 3) for x in hi.rays())
    hit, points = sphere_trace(union, origins, dirs)
    rgb = torch.ones_like(origins)
    b, h, w = len(cameras), cameras.height, cameras.width
    if hit.any():
        normals = _sdf_normals(union, points[hit])
        light = key_light(origins.dtype)
        part = torch.stack([f(points[hit]) for f in sdfs]).argmin(0)
        view = torch.arange(b, device=origins.device).repeat_interleave(h * w * s * s)[hit]
        per_ray = albedo.to(origins.dtype)[view, part]
        rgb[hit] = shade(per_ray, normals, light, "lambertian", AMBIENT)
    rgb = rgb.view(b, h, s, w, s, 3).mean((2, 4))
    alpha = hit.to(origins.dtype).view(b, h, s, w, s).mean((2, 4))
    return rgb, alpha
