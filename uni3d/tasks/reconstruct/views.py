"""Training and held-out views of a source mesh: cameras around it and its rasterized images."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from uni3d.errors import UsageError
from uni3d.export.raster import rasterize_trimesh
from uni3d.scene.cameras import Cameras, sphere_cameras
from uni3d.tasks.reconstruct.meshes import SourceMesh


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
