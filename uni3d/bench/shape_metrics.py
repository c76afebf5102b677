"""Ground truth and metrics of ``uni3d bench shapes``: what a prompt names, the true primitive, and the scores.

- **Chamfer**: :func:`uni3d.tasks.reconstruct.metrics.chamfer`-style symmetric mean nearest-neighbour distance between
  surface samples of the exported mesh (``model_vertex_color.glb``) and of the true primitive, divided by the true
  bounding-box diagonal. The true mesh is the zero set of the dataset's signed distance (marching cubes at
  :data:`GT_RESOLUTION`^3), centred and upright exactly as the dataset renders it. The prior sees every azimuth,
  so a generated cube may be turned about the vertical axis: the distance is the minimum over
  :data:`YAW_STEPS` turns in ``[0, 90)`` degrees (the cube's and pyramid's symmetry; the rest are round);
- **colour**: the area-weighted mean vertex colour (the field's albedo) of the exported mesh; ``colour error`` is
  the area-weighted mean RGB distance (``[0, 1]`` units) of the surface to the named albedo, and the colour is
  right when the nearest named albedo to the mean colour is the prompt's;
- **size**: the asset's RMS surface radius (about its surface centroid) over the true primitive's, and the
  *size-free* nearest primitive: the same Chamfer after the asset is moved onto each primitive's centroid and
  scaled to its RMS radius, so that a cube made 15 % too large is not called a sphere (the plain nearest
  primitive judges shape and size together).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import trimesh
from scipy.spatial import cKDTree
from skimage import measure

from uni3d.models.vocabulary import COLOUR_NAMES, SHAPE_NAMES, SYNONYMS
from uni3d.tasks.embedded_prior.primitives import BOX_HALF, COLOURS, SHAPES

GT_RESOLUTION = 128
"""Marching-cubes resolution of the true primitives (voxel 1.5/128 = 0.012 world units)."""
YAW_STEPS = 12
"""Turns about ``+y`` tried by the Chamfer distance, evenly over ``[0, 90)`` degrees (7.5 degree steps)."""
N_POINTS = 10000
"""Surface samples per mesh for the Chamfer distance."""


@dataclass(frozen=True)
class Target:
    """What a prompt names: a primitive and/or a colour (``None`` when left open)."""

    prompt: str
    shape: str | None
    colour: str | None

    @property
    def specified(self) -> bool:
        """Both named: scored for accuracy; otherwise a diversity prompt."""
        return self.shape is not None and self.colour is not None


SHAPE_OF_WORD: dict[str, str] = {word: shape for shape, words in SYNONYMS.items() for word in words}
"""A shape's name or synonym ("box", "ball", "ring") -> the shape."""


def parse_target(prompt: str) -> Target:
    """The first shape word (a name or a synonym) and the first colour name among the prompt's words ("gray"
    counts as grey)."""
    words = re.findall(r"[a-z]+", prompt.lower().replace("gray", "grey"))
    shape = next((SHAPE_OF_WORD[w] for w in words if w in SHAPE_OF_WORD), None)
    colour = next((w for w in words if w in COLOUR_NAMES), None)
    return Target(prompt, shape, colour)


def sdf_mesh(sdf: Callable[[torch.Tensor], torch.Tensor], resolution: int) -> trimesh.Trimesh:
    """The zero set of a signed distance over the scene's box (marching cubes at ``resolution``^3)."""
    half = BOX_HALF + 0.05
    axis = torch.linspace(-half, half, resolution)
    pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    values = sdf(pts).view(resolution, resolution, resolution).numpy()
    spacing = 2 * half / (resolution - 1)
    verts, faces, _, _ = measure.marching_cubes(values, level=0.0, spacing=(spacing,) * 3)
    return trimesh.Trimesh(verts - half, faces, process=True)


@functools.cache
def primitive_mesh(shape: str, resolution: int = GT_RESOLUTION) -> trimesh.Trimesh:
    """The true surface of ``shape`` (the zero set of the dataset's signed distance) in scene coordinates."""
    return sdf_mesh(SHAPES[shape], resolution)


@functools.cache
def _primitive_samples(shape: str) -> tuple[np.ndarray, cKDTree, float]:
    mesh = primitive_mesh(shape)
    pts, _ = trimesh.sample.sample_surface(mesh, N_POINTS, seed=1)
    return pts, cKDTree(pts), float(np.linalg.norm(mesh.extents))


def _centre_and_radius(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Centroid and RMS distance from it of surface samples ``(N, 3)``."""
    centre = points.mean(0)
    return centre, float(np.sqrt(((points - centre) ** 2).sum(1).mean()))


def _surface_samples(mesh: trimesh.Trimesh) -> np.ndarray:
    return np.asarray(trimesh.sample.sample_surface(mesh, N_POINTS, seed=0)[0])


def yaw(points: np.ndarray, degrees: float) -> np.ndarray:
    """``points (N, 3)`` turned by ``degrees`` about ``+y``."""
    a = math.radians(degrees)
    rot = np.array([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])
    return points @ rot.T


def size_ratio(mesh: trimesh.Trimesh, shape: str) -> float:
    """RMS surface radius of ``mesh`` over the true ``shape``'s (1: the true size)."""
    return _centre_and_radius(_surface_samples(mesh))[1] / _centre_and_radius(_primitive_samples(shape)[0])[1]


def shape_chamfer(mesh: trimesh.Trimesh, shape: str, size_free: bool = False) -> float:
    """Symmetric Chamfer between ``mesh`` and the true ``shape``, over its bbox diagonal, minimised over yaw.

    ``size_free``: the mesh is first moved onto the true surface's centroid and scaled to its RMS radius."""
    return _points_chamfer(_surface_samples(mesh), shape, size_free)


def _points_chamfer(pred: np.ndarray, shape: str, size_free: bool) -> float:
    """:func:`shape_chamfer` of the mesh's surface samples ``pred (N, 3)``."""
    true_pts, true_tree, diag = _primitive_samples(shape)
    if size_free:
        centre, radius = _centre_and_radius(pred)
        true_centre, true_radius = _centre_and_radius(true_pts)
        pred = (pred - centre) * (true_radius / radius) + true_centre
    best = math.inf
    for k in range(YAW_STEPS):
        turned = yaw(pred, 90.0 * k / YAW_STEPS)
        to_true = float(true_tree.query(turned)[0].mean())
        to_pred = float(cKDTree(turned).query(true_pts)[0].mean())
        best = min(best, (to_true + to_pred) / 2 / diag)
    return best


def classify_shape(mesh: trimesh.Trimesh, size_free: bool = False) -> tuple[str, dict[str, float]]:
    """The nearest primitive by :func:`shape_chamfer`, and the distance to each (the mesh sampled once)."""
    pred = _surface_samples(mesh)
    scores = {name: _points_chamfer(pred, name, size_free) for name in SHAPE_NAMES}
    return min(scores, key=scores.__getitem__), scores


def surface_colours(mesh: trimesh.Trimesh) -> tuple[np.ndarray, np.ndarray]:
    """Vertex colours ``(V, 3)`` in ``[0, 1]`` and area weights ``(V,)`` (a third of each adjacent face's area)."""
    rgb = np.asarray(mesh.visual.vertex_colors, dtype=np.float64)[:, :3] / 255.0
    weights = np.zeros(len(mesh.vertices))
    np.add.at(weights, np.asarray(mesh.faces).reshape(-1), np.repeat(mesh.area_faces / 3, 3))
    return rgb, weights


def nearest_colour(rgb: Iterable[float]) -> str:
    """The named colour whose albedo is nearest to ``rgb`` (Euclidean)."""
    rgb = np.asarray(list(rgb), dtype=np.float64)
    return min(COLOUR_NAMES, key=lambda name: float(np.linalg.norm(np.asarray(COLOURS[name]) - rgb)))


def colour_scores(mesh: trimesh.Trimesh, target: str | None) -> dict[str, Any]:
    """Mean surface colour, its nearest name and (given a target) the mean RGB distance to the target albedo."""
    rgb, weights = surface_colours(mesh)
    total = weights.sum() or 1.0
    mean = (rgb * weights[:, None]).sum(0) / total
    out: dict[str, Any] = {"mean_rgb": [round(float(v), 4) for v in mean], "colour_pred": nearest_colour(mean)}
    if target is not None:
        dist = np.linalg.norm(rgb - np.asarray(COLOURS[target]), axis=1)
        out["colour_error"] = float((dist * weights).sum() / total)
        out["right_colour"] = out["colour_pred"] == target
    return out


def score_mesh(mesh: trimesh.Trimesh, target: Target) -> dict[str, Any]:
    """Every metric of one asset against ``target`` (Chamfer only when the prompt names the shape)."""
    shape_pred, distances = classify_shape(mesh)
    size_free, _ = classify_shape(mesh, size_free=True)
    row: dict[str, Any] = {
        "shape_pred": shape_pred,
        "shape_pred_size_free": size_free,
        **colour_scores(mesh, target.colour),
    }
    if target.shape is not None:
        row["chamfer"] = distances[target.shape]
        row["right_shape"] = shape_pred == target.shape
        row["right_shape_size_free"] = size_free == target.shape
        row["size_ratio"] = size_ratio(mesh, target.shape)
    return row
