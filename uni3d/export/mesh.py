"""Field -> triangle mesh: density grid, automatic iso-level, marching cubes, cleanup and decimation.

The automatic iso-level is where rays start to be absorbed: along rays from orbit views that become opaque,
the density at the point where transmittance ``T`` first drops below :data:`SURFACE_TRANSMITTANCE` (0.9; the
exact point inside the crossing interval of volume.py's quadrature, density constant in it); the median over
the rays is the level. A photometric fit leaves a soft density ramp in front of opaque surfaces, so the
``T = 1/2`` point (the rendered depth) lies inside the solid (measured in docs/reconstruct.md). Marching cubes (Lorensen & Cline 1987; scikit-image) runs on
the density sampled at ``resolution^3`` points over the occupied cells' bounding box (points in empty cells
are not evaluated: their density is below the occupancy threshold). Enclosed cavities (empty voxels no path
through empty space connects to the box's border) are filled first: no camera sees them, so a fit leaves the
inside of a solid at any density, and marching cubes would wrap a hollow in a second, inner surface; so is the
low density that no axis-aligned view sees (:func:`fill_unseen_voxels`: such as the inside of a nut's walls), unless
``fill_unseen=False`` (a floater over a cup's opening hides the column below it from the one axis that looks
in, and the fill turns that column solid).
"""

from __future__ import annotations

import numpy as np
import pymeshlab
import torch
import trimesh
from scipy import ndimage
from skimage import measure

from uni3d.errors import UsageError
from uni3d.scene.cameras import orbit_cameras
from uni3d.scene.renderer import VolumeRenderer
from uni3d.scene.volume import render_weights

SURFACE_TRANSMITTANCE = 0.9
"""Transmittance at which a ray counts as having reached the surface (10% of its light absorbed)."""


@torch.no_grad()
def auto_threshold(renderer: VolumeRenderer, n_views: int = 8, size: int = 64) -> float:
    """Median density at the :data:`SURFACE_TRANSMITTANCE` crossing point of opaque rays (``T < 1/2`` at the
    ray's end); :class:`UsageError` if no ray becomes opaque.

    Fog is not surface: each ray's floor (its least density in front of its ``T = 1/2`` point; an untrained
    field's ``e^-1`` everywhere, about 0 in free space of a fitted one) is taken off before the crossing is
    sought, so haze cannot put the surface on the occupied box. In the crossing interval ``[t0, t1)`` with
    excess density ``s`` and entry transmittance ``T0`` the crossing point is ``t0 + ln(T0 / T_s) / s`` (eq. 3
    with constant density); the field is queried there.
    """
    origins, dirs = (t.reshape(-1, 3) for t in orbit_cameras(n_views, elevation_deg=20.0, size=size).rays())
    est = renderer.estimator
    rays, t0, t1 = est.sample(origins, dirs, renderer.field.density)
    if len(rays) == 0:
        raise UsageError("the field is empty: nothing to export (no occupied space)")
    sigma = renderer.field.density(origins[rays] + ((t0 + t1) / 2)[:, None] * dirs[rays])
    _, trans = render_weights(sigma, t0, t1, rays, len(origins))
    ends_opaque = trans * torch.exp(-sigma * (t1 - t0)) < 0.5
    if not ends_opaque.any():
        raise UsageError("the field is empty: no ray becomes opaque, nothing to export")
    opaque = torch.zeros(len(origins), dtype=torch.bool).index_fill_(0, rays[ends_opaque], True)
    front = torch.where(trans >= 0.5, sigma, torch.inf)
    floor = torch.full((len(origins),), torch.inf).scatter_reduce_(0, rays, front, "amin")[rays]
    excess = sigma - floor
    _, trans = render_weights(excess, t0, t1, rays, len(origins))
    after = trans * torch.exp(-excess * (t1 - t0))
    crossing = opaque[rays] & (trans >= SURFACE_TRANSMITTANCE) & (after < SURFACE_TRANSMITTANCE)
    if not crossing.any():
        raise UsageError("the field has no surface, only haze of even density: nothing to export")
    at = t0[crossing] + torch.log(trans[crossing] / SURFACE_TRANSMITTANCE) / excess[crossing]
    points = origins[rays[crossing]] + at[:, None] * dirs[rays[crossing]]
    return float(renderer.field.density(points).median())


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


def fill_unseen_voxels(grid: np.ndarray, level: float, spacing: np.ndarray) -> np.ndarray:
    """``grid`` with every voxel below ``level`` that no axis-aligned view sees raised to the grid's maximum.

    A voxel is seen when the light of an orthographic ray along ``+-x``, ``+-y`` or ``+-z`` from outside the grid
    reaches it with transmittance above 1/2 (``T = exp(-sum sigma h)`` over the voxels in front of it, eq. 3).
    Unseen low density lies inside the solid (a photometric fit never constrains it: the nut's walls), and
    marching cubes would wrap it in sheets that touch the outside, which :func:`fill_cavities` cannot fill.
    A concavity seen only obliquely (none of the six directions) is filled too.
    """
    seen = np.zeros(grid.shape, dtype=bool)
    for axis in range(3):
        for flip in (False, True):
            g = np.flip(grid, axis) if flip else grid
            tau = g * spacing[axis]
            lit = np.exp(-(np.cumsum(tau, axis=axis) - tau)) > 0.5
            seen |= np.flip(lit, axis) if flip else lit
    hidden = ~seen & (grid <= level)
    if not hidden.any():
        return grid
    filled = grid.copy()
    filled[hidden] = grid.max()
    return filled


def remove_small_components(mesh: trimesh.Trimesh, min_fraction: float) -> trimesh.Trimesh:
    """Drop connected components with fewer than ``min_fraction`` of the faces (floaters)."""
    parts = mesh.split(only_watertight=False)
    if len(parts) <= 1:
        return mesh
    keep = [p for p in parts if len(p.faces) >= min_fraction * len(mesh.faces)]
    return trimesh.util.concatenate(keep or [max(parts, key=lambda p: len(p.faces))])


def decimate(mesh: trimesh.Trimesh, max_faces: int) -> trimesh.Trimesh:
    """Quadric edge-collapse decimation (Garland & Heckbert 1997; MeshLab's filter through pymeshlab) towards
    ``max_faces`` faces, with MeshLab's topology check on: no collapse may change the surface's genus or split it.

    Without the check, edge collapses tear flat regions open (docs/reconstruct.md). The price: a surface with more small handles than the budget can hold
    (noise) stops above the budget rather than tearing.
    """
    if len(mesh.faces) <= max_faces:
        return mesh
    meshes = pymeshlab.MeshSet()
    meshes.add_mesh(pymeshlab.Mesh(np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int32)))
    meshes.meshing_decimation_quadric_edge_collapse(
        targetfacenum=max_faces, preservetopology=True, preservenormal=True, optimalplacement=True, planarquadric=True
    )
    simplified = meshes.current_mesh()
    out = trimesh.Trimesh(simplified.vertex_matrix(), simplified.face_matrix(), process=True)
    out.update_faces(out.nondegenerate_faces())
    out.remove_unreferenced_vertices()
    return out


def extract_mesh(
    renderer: VolumeRenderer,
    resolution: int = 128,
    threshold: float | None = None,
    min_component: float = 0.002,
    max_faces: int = 20000,
    fill_unseen: bool = True,
) -> tuple[trimesh.Trimesh, float]:
    """Marching cubes at ``resolution^3`` (``threshold=None``: :func:`auto_threshold`), cleaned and decimated;
    enclosed cavities are always filled, the voxels no axis-aligned view sees only with ``fill_unseen``.

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
    solid = fill_cavities(grid, level)
    if fill_unseen:
        solid = fill_unseen_voxels(solid, level, spacing)
    # skimage winds its triangles clockwise seen from the side of lower values (its "descent" convention for an
    # object of higher values); glTF, OBJ and trimesh want them counter-clockwise seen from outside, so the
    # order is reversed (else every viewer that culls back faces shows the asset inside out).
    verts, faces, _, _ = measure.marching_cubes(solid, level=level, spacing=tuple(spacing))
    mesh = trimesh.Trimesh(verts + origin, faces[:, ::-1], process=True)
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.remove_unreferenced_vertices()
    # again after decimation: a collapse can leave a sliver of a few faces behind
    mesh = remove_small_components(decimate(remove_small_components(mesh, min_component), max_faces), min_component)
    if len(mesh.faces) == 0:
        raise UsageError("the exported mesh has no faces")
    return mesh, level
