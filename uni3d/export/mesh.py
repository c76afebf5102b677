"""Field -> triangle mesh: density grid, automatic iso-level, marching cubes, cleanup and decimation.

The automatic iso-level is where the renderer itself puts the surface: along rays that become opaque, the
density at the sample where transmittance ``T`` first drops below 1/2 (volume.py's quadrature); the median
over many rays from orbit views is the level. Marching cubes (Lorensen & Cline 1987; scikit-image) runs on
the density sampled at ``resolution^3`` points over the occupied cells' bounding box (points in empty cells
are not evaluated: their density is below the occupancy threshold). Enclosed cavities (empty voxels no path
through empty space connects to the box's border) are filled first: no camera sees them, so a fit leaves the
inside of a solid at any density, and marching cubes would wrap a hollow in a second, inner surface.
"""

from __future__ import annotations

import fast_simplification
import numpy as np
import torch
import trimesh
from scipy import ndimage
from skimage import measure

from uni3d.errors import UsageError
from uni3d.scene.cameras import orbit_cameras
from uni3d.scene.renderer import VolumeRenderer
from uni3d.scene.volume import render_weights


@torch.no_grad()
def auto_threshold(renderer: VolumeRenderer, n_views: int = 8, size: int = 64) -> float:
    """Median density at the ``T = 1/2`` crossing of opaque rays; :class:`UsageError` if no ray becomes opaque."""
    origins, dirs = (t.reshape(-1, 3) for t in orbit_cameras(n_views, elevation_deg=20.0, size=size).rays())
    est = renderer.estimator
    rays, t0, t1 = est.sample(origins, dirs, renderer.field.density)
    if len(rays) == 0:
        raise UsageError("the field is empty: nothing to export (no occupied space)")
    sigma = renderer.field.density(origins[rays] + ((t0 + t1) / 2)[:, None] * dirs[rays])
    _, trans = render_weights(sigma, t0, t1, rays, len(origins))
    after = trans * torch.exp(-sigma * (t1 - t0))
    crossing = (trans >= 0.5) & (after < 0.5)
    if not crossing.any():
        raise UsageError("the field is empty: no ray becomes opaque, nothing to export")
    return float(sigma[crossing].median())


@torch.no_grad()
def density_grid(
    renderer: VolumeRenderer, resolution: int, chunk: int = 65536
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Densities ``(R, R, R)`` (axis order x, y, z) over the occupied box, with its corner and voxel spacing."""
    bounds = renderer.estimator.occupied_bounds()
    if bounds is None:
        raise UsageError("the field is empty: no occupied cells, nothing to export")
    lo, hi = bounds
    axes = [torch.linspace(float(lo[i]), float(hi[i]), resolution) for i in range(3)]
    pts = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    values = torch.zeros(len(pts))
    keep = renderer.estimator.occupied(pts).nonzero().squeeze(-1)
    for idx in keep.split(chunk):
        values[idx] = renderer.field.density(pts[idx])
    spacing = ((hi - lo) / (resolution - 1)).numpy()
    return values.view(resolution, resolution, resolution).numpy(), lo.numpy(), spacing


def fill_cavities(grid: np.ndarray, level: float) -> np.ndarray:
    """``grid`` with every enclosed region below ``level`` raised to the grid's maximum (3-D hole filling of the
    ``grid > level`` mask, scipy's ``binary_fill_holes``: regions connected to the border stay empty)."""
    solid = grid > level
    cavities = ndimage.binary_fill_holes(solid) & ~solid
    if not cavities.any():
        return grid
    filled = grid.copy()
    filled[cavities] = grid.max()
    return filled


def remove_small_components(mesh: trimesh.Trimesh, min_fraction: float) -> trimesh.Trimesh:
    """Drop connected components with fewer than ``min_fraction`` of the faces (floaters)."""
    parts = mesh.split(only_watertight=False)
    if len(parts) <= 1:
        return mesh
    keep = [p for p in parts if len(p.faces) >= min_fraction * len(mesh.faces)]
    return trimesh.util.concatenate(keep or [max(parts, key=lambda p: len(p.faces))])


def decimate(mesh: trimesh.Trimesh, max_faces: int) -> trimesh.Trimesh:
    """Quadric decimation (fast-simplification) down to at most about ``max_faces`` faces."""
    if len(mesh.faces) <= max_faces:
        return mesh
    reduction = 1 - max_faces / len(mesh.faces)
    verts, faces = fast_simplification.simplify(
        np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int32), target_reduction=reduction
    )
    out = trimesh.Trimesh(verts, faces, process=True)
    out.update_faces(out.nondegenerate_faces())
    out.remove_unreferenced_vertices()
    return out


def extract_mesh(
    renderer: VolumeRenderer,
    resolution: int = 128,
    threshold: float | None = None,
    min_component: float = 0.002,
    max_faces: int = 20000,
) -> tuple[trimesh.Trimesh, float]:
    """Marching cubes at ``resolution^3`` (``threshold=None``: :func:`auto_threshold`), cleaned and decimated.

    Returns the mesh in scene coordinates and the iso-level used.
    """
    if not 16 <= resolution <= 512:
        raise UsageError(f"marching-cubes resolution must be 16-512, got {resolution}")
    if max_faces < 100:
        raise UsageError(f"face budget must be at least 100, got {max_faces}")
    level = auto_threshold(renderer) if threshold is None else threshold
    grid, origin, spacing = density_grid(renderer, resolution)
    if not grid.min() < level < grid.max():
        raise UsageError(f"the field is empty at iso-level {level:.3g}: nothing to export")
    verts, faces, _, _ = measure.marching_cubes(fill_cavities(grid, level), level=level, spacing=tuple(spacing))
    mesh = trimesh.Trimesh(verts + origin, faces, process=True)
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.remove_unreferenced_vertices()
    mesh = decimate(remove_small_components(mesh, min_component), max_faces)
    if len(mesh.faces) == 0:
        raise UsageError("the exported mesh has no faces")
    return mesh, level
