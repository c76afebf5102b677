"""Training and held-out views of a source mesh: cameras around it and its rasterized images."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import trimesh

from uni3d.errors import UsageError
from uni3d.scene.cameras import Cameras, sphere_cameras
from uni3d.tasks.reconstruct.meshes import SourceMesh
from uni3d.tasks.reconstruct.raster import rasterize

DEFAULT_ALBEDO = (0.8, 0.55, 0.3)


@dataclass
class ViewSet:
    """Cameras with premultiplied ``rgb (B, H, W, 3)`` and ``alpha (B, H, W, 1)``."""

    cameras: Cameras
    rgb: torch.Tensor
    alpha: torch.Tensor

    def on_background(self, color: float = 1.0) -> torch.Tensor:
        """Images composited on a solid grey level ``color``."""
        return self.rgb + (1 - self.alpha) * color


def camera_distance(source: SourceMesh, fov_deg: float, margin: float = 1.05) -> float:
    """Distance at which the mesh's bounding sphere just fits the field of view (times ``margin``)."""
    radius = source.diagonal / 2
    return margin * radius / math.sin(math.radians(fov_deg) / 2)


def render_views(source: SourceMesh, n: int, size: int, fov_deg: float = 40.0, offset: float = 0.5) -> ViewSet:
    """``n`` Fibonacci-sphere views of ``size x size`` pixels (``offset`` picks a disjoint spiral for held-out)."""
    if n < 1:
        raise UsageError(f"need at least 1 view, got {n}")
    if not 8 <= size <= 1024:
        raise UsageError(f"view size must be 8-1024 pixels, got {size}")
    cams = sphere_cameras(n, distance=camera_distance(source, fov_deg), fov_deg=fov_deg, size=size, offset=offset)
    return ViewSet(cams, *rasterize_trimesh(cams, source.mesh))


def rasterize_trimesh(cams: Cameras, mesh: trimesh.Trimesh) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~uni3d.tasks.reconstruct.raster.rasterize` of a trimesh: its vertex normals, and its vertex colours as
    the albedo (:data:`DEFAULT_ALBEDO` when it has none); premultiplied ``rgb`` and ``alpha``."""
    verts = torch.tensor(np.asarray(mesh.vertices), dtype=torch.float32)
    faces = torch.tensor(np.asarray(mesh.faces), dtype=torch.long)
    normals = torch.tensor(np.asarray(mesh.vertex_normals), dtype=torch.float32)
    if mesh.visual.kind == "vertex":
        albedo = torch.tensor(np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0, dtype=torch.float32)
    else:
        albedo = torch.tensor(DEFAULT_ALBEDO).expand(len(verts), 3)
    return rasterize(cams, verts, faces, normals, albedo)
