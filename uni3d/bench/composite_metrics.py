"""Ground truth and metrics of composite prompts ("a red cube on top of a blue sphere"): parts, relation, Janus.

- :func:`parse_composite` reads what a prompt asks for in any of the dataset's wordings (synonyms, "under",
  "next to", "with a red nose"), or ``None`` for a prompt naming one thing;
- **Chamfer**: the symmetric mean nearest-neighbour distance between surface samples of the exported mesh and of
  the true union (marching cubes of :meth:`Composite.sdf`), over its bounding-box diagonal, minimised over
  :data:`YAW_STEPS` turns about the vertical axis (a composite has no symmetry to shortcut; a front turned away is
  found, and its direction reported below);
- **shapes**: the composite of the same layout nearest to the asset by that distance, over every pair of shapes;
  the named pair must be the nearest, so a blob painted in the two colours is not a cube on a sphere;
- **parts**: after the best turn, a part is *present* when the asset comes within :data:`NEAR` of at least
  :data:`PRESENT_SHARE` of its true surface, and *right* when the asset's samples near it are, on average,
  nearest its named colour;
- **relation**: from colours, the centroids of the surface coloured like each part: part 0 above part 1
  (``stack``), apart more across than up (``beside``), the marker off the body's side (``front``);
- **Janus** (:func:`marker_regions`): how many marker-coloured surface regions point in clearly different
  directions from the body; more than one is a Janus outcome. The largest region's azimuth from the body's centre
  says where the object's front ended up (``0``: towards ``+z``, where the view words put the front).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import trimesh
from scipy.spatial import cKDTree

from uni3d.bench.shape_metrics import SHAPE_OF_WORD, sdf_mesh, yaw
from uni3d.errors import UsageError
from uni3d.models.vocabulary import COLOUR_NAMES
from uni3d.tasks.embedded_prior.composites import MARKERS, Composite, all_composites
from uni3d.tasks.embedded_prior.primitives import COLOURS

GT_RESOLUTION = 128
YAW_STEPS = 24
"""Turns about ``+y`` tried by the Chamfer distance, evenly over a full turn."""
N_POINTS = 10000
CANDIDATE_POINTS, CANDIDATE_RESOLUTION = 2000, 64
"""Samples and marching-cubes resolution of the other composites the asset is compared with."""
CHAMFER_RIGHT = 0.05
"""A composite is right only within this Chamfer distance (a share of the true diagonal)."""
NEAR = 0.025
"""A surface sample is near the other surface within this share of the true diagonal."""
PRESENT_SHARE = 0.5
"""A part is present when the asset comes near this share of its true surface."""
REGION_SHARE = 0.2
"""A marker-coloured surface region counts towards the Janus count from this share of the true marker's area."""
JANUS_APART_DEG = 90.0
"""Marker regions count as separate fronts when their azimuths from the body's centre are this far apart."""
RELATION_MARGIN = 0.08
"""World units by which the colour centroids must be apart in the relation's direction."""

_MARKER_WORDS = {word: shape for shape, word in MARKERS.items()}


@dataclass(frozen=True)
class CompositeTarget:
    """What a composite prompt asks for: the geometry and each part's colour (``None``: left open)."""

    prompt: str
    composite: Composite
    colours: tuple[str | None, str | None]

    @property
    def specified(self) -> bool:
        """Every part's colour named: scored for accuracy."""
        return all(c is not None for c in self.colours)


_VIEW_PHRASES = re.compile(r"\b(seen |viewed |as seen )?from (above|below|the \w+|behind)\b|\b\w+ view\b")
"""Camera words, which say nothing about how the parts stand ("seen from above", "side view")."""
_BESIDE = re.compile(r"\b(beside|next to|side by side|on the (left|right)( of)?|to the (left|right) of)\b")
_SECOND_ON_TOP = re.compile(r"\b(with|and)\b.*\bon (top|it)\b")
""""a cube with a ball on top", "a cube and a ball on it": the second thing is the upper one."""


def _things(words: list[str]) -> tuple[list[list[str | None]], int] | None:
    """``[colour, shape]`` of each thing in prompt order and the index of the marker (``-1``: none); ``None`` when a
    marker word contradicts the shape named with it ("a sphere nose")."""
    things: list[list[str | None]] = []
    colour: str | None = None
    marker, previous = -1, ""
    for word in words:
        if word in COLOUR_NAMES:
            if things and things[-1][0] is None and previous in {"is", "coloured", "colored", *SHAPE_OF_WORD}:
                things[-1][0] = word  # "a cube that is red", "a cube, red": the thing before it
            else:
                colour = word
        elif word in SHAPE_OF_WORD:
            things.append([colour, SHAPE_OF_WORD[word]])
            colour = None
        elif word in ("object", "thing") and colour is not None:
            things.append([colour, None])
            colour = None
        elif word in _MARKER_WORDS:
            if previous in SHAPE_OF_WORD and things:  # "a red cone nose": that cone is the marker
                if things[-1][1] != _MARKER_WORDS[word]:
                    return None
            else:
                things.append([colour, _MARKER_WORDS[word]])
                colour = None
            marker = len(things) - 1
        if word not in COLOUR_NAMES:
            previous = word
    return things, marker


def parse_composite(prompt: str) -> CompositeTarget | None:
    """The composite a prompt names, or ``None`` when it names fewer or more than two things or no relation.

    Things are shape words (names or synonyms) with their colour before them ("a red cube") or after ("a cube that
    is red"), or a colour with "object"/"thing"; a marker word ("nose", "handle", "knob") makes the thing before
    it, or a new one of the marker's shape, the second part of a ``front`` object. Camera words are ignored;
    "under"/"below" and "with ... on top" put the first thing underneath, "on the left of" is beside.
    """
    text = _VIEW_PHRASES.sub(" ", prompt.lower().replace("gray", "grey"))
    found = _things(re.findall(r"[a-z]+", text))
    if found is None:
        return None
    things, marker = found
    if len(things) != 2 or any(shape is None for _, shape in things):
        return None
    if marker == 1:
        layout = "front"
    elif _BESIDE.search(text):
        layout = "beside"
    elif re.search(r"\b(under|below|beneath)\b", text) or _SECOND_ON_TOP.search(text):
        layout, things = "stack", things[::-1]
    elif re.search(r"\b(on|above|atop)\b", text):
        layout = "stack"
    elif re.search(r"\band\b", text):
        layout = "beside"
    else:
        return None
    try:
        composite = Composite(layout, tuple(str(shape) for _, shape in things))
    except UsageError:  # e.g. a torus with a nose: not a geometry the prior knows
        return None
    return CompositeTarget(prompt, composite, (things[0][0], things[1][0]))


@functools.cache
def union_mesh(composite: Composite, resolution: int = GT_RESOLUTION) -> trimesh.Trimesh:
    """The true surface of ``composite`` (the zero set of its union's distance bound) in scene coordinates."""
    return sdf_mesh(composite.sdf, resolution)


@dataclass(frozen=True)
class _Truth:
    points: np.ndarray
    tree: cKDTree
    diagonal: float
    part: np.ndarray


@functools.cache
def _truth(composite: Composite, n: int, resolution: int) -> _Truth:
    """``n`` true surface samples, their tree, the bbox diagonal and each sample's part."""
    mesh = union_mesh(composite, resolution)
    pts, _ = trimesh.sample.sample_surface(mesh, n, seed=1)
    return _Truth(pts, cKDTree(pts), float(np.linalg.norm(mesh.extents)), part_of(composite, pts))


def part_of(composite: Composite, points: np.ndarray) -> np.ndarray:
    """Index ``(N,)`` of the part whose surface is nearest to each point."""
    p = torch.from_numpy(np.asarray(points, dtype=np.float32))
    return torch.stack([f(p).abs() for f in composite.part_sdfs()]).argmin(0).numpy()


def coloured_samples(mesh: trimesh.Trimesh, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` area-uniform surface samples ``(n, 3)`` and their colours ``(n, 3)`` in ``[0, 1]`` (face mean of the
    vertex colours)."""
    pts, faces = trimesh.sample.sample_surface(mesh, n, seed=0)
    rgb = np.asarray(mesh.visual.vertex_colors, dtype=np.float64)[:, :3] / 255.0
    return np.asarray(pts), rgb[np.asarray(mesh.faces)[faces]].mean(1)


def best_turn(pred: np.ndarray, truth: _Truth, steps: int) -> tuple[float, float]:
    """``(Chamfer over the diagonal, yaw in degrees)`` of ``pred`` against ``truth`` at the best of ``steps`` turns."""
    best = (math.inf, 0.0)
    for k in range(steps):
        degrees = 360.0 * k / steps
        turned = yaw(pred, degrees)
        distance = (
            float(truth.tree.query(turned)[0].mean()) + float(cKDTree(turned).query(truth.points)[0].mean())
        ) / 2
        best = min(best, (distance / truth.diagonal, degrees))
    return best


def nearest_pair(pred: np.ndarray, layout: str) -> tuple[tuple[str, ...], dict[str, float]]:
    """The shapes of the composite of ``layout`` nearest to ``pred`` by :func:`best_turn` (coarser than the score,
    :data:`CANDIDATE_POINTS` samples), and the distance to each candidate."""
    sub = pred[:: max(1, len(pred) // CANDIDATE_POINTS)]
    candidates = [c for c in all_composites() if c.layout == layout and c.side == 1]
    scores = {
        c: best_turn(sub, _truth(c, CANDIDATE_POINTS, CANDIDATE_RESOLUTION), YAW_STEPS // 2)[0] for c in candidates
    }
    nearest = min(scores, key=scores.__getitem__)
    return nearest.shapes, {"+".join(c.shapes): round(v, 5) for c, v in scores.items()}


def _nearest_names(rgb: np.ndarray) -> np.ndarray:
    palette = np.asarray([COLOURS[c] for c in COLOUR_NAMES])
    return np.linalg.norm(rgb[:, None, :] - palette[None], axis=-1).argmin(1)


def relation_holds(target: CompositeTarget, points: np.ndarray, rgb: np.ndarray) -> bool | None:
    """Whether the surface coloured like each part stands as the relation says (``None``: a colour left open)."""
    if not target.specified:
        return None
    names = _nearest_names(rgb)
    ids = [COLOUR_NAMES.index(str(c)) for c in target.colours]
    if ids[0] == ids[1] or not all((names == i).sum() >= 10 for i in ids):
        return False
    a, b = (points[names == i].mean(0) for i in ids)
    up, across = float(a[1] - b[1]), math.hypot(a[0] - b[0], a[2] - b[2])
    if target.composite.layout == "stack":
        return bool(up > RELATION_MARGIN)
    return bool(across > max(RELATION_MARGIN, abs(up)))  # beside; front: the marker sticks out sideways from the body


def marker_regions(mesh: trimesh.Trimesh, target: CompositeTarget) -> tuple[int, float | None]:
    """The Janus count of a ``front`` target and the azimuth of its largest marker region (see the module docstring).

    Regions are connected faces whose colour is nearest the marker's, each of at least :data:`REGION_SHARE` of the
    true marker's area; the count is the size of the largest set of them whose directions from the body's centre
    (azimuths) are more than :data:`JANUS_APART_DEG` apart, so one marker split by a band of shading is one.
    """
    body, marker = (COLOUR_NAMES.index(str(c)) for c in target.colours)
    rgb = np.asarray(mesh.visual.vertex_colors, dtype=np.float64)[:, :3] / 255.0
    names = _nearest_names(rgb[np.asarray(mesh.faces)].mean(1))
    truth = union_mesh(target.composite)
    true_area = float(truth.area_faces[part_of(target.composite, truth.triangles_center) == 1].sum())
    regions = trimesh.graph.connected_components(mesh.face_adjacency, nodes=np.flatnonzero(names == marker), min_len=1)
    area = mesh.area_faces

    def centre(faces: np.ndarray) -> np.ndarray:
        return (mesh.triangles_center[faces] * area[faces, None]).sum(0) / area[faces].sum()

    big = sorted((r for r in regions if area[r].sum() >= REGION_SHARE * true_area), key=lambda r: -area[r].sum())
    if not big:
        return 0, None
    body_faces = np.flatnonzero(names == body)
    middle = centre(body_faces) if len(body_faces) else np.asarray(mesh.centroid)
    azimuths = [math.degrees(math.atan2(*(centre(r) - middle)[[0, 2]])) for r in big]
    apart: list[float] = []
    for a in azimuths:  # greedily, largest region first
        if all(abs((a - b + 180.0) % 360.0 - 180.0) > JANUS_APART_DEG for b in apart):
            apart.append(a)
    return len(apart), azimuths[0]


def score_composite(mesh: trimesh.Trimesh, target: CompositeTarget) -> dict[str, Any]:
    """Every metric of one asset against a composite ``target`` (see the module docstring)."""
    composite = target.composite
    truth = _truth(composite, N_POINTS, GT_RESOLUTION)
    pred, rgb = coloured_samples(mesh, N_POINTS)
    chamfer, turn = best_turn(pred, truth, YAW_STEPS)
    shapes, candidates = nearest_pair(pred, composite.layout)
    turned = yaw(pred, turn)
    distance, index = truth.tree.query(turned)
    near = distance <= NEAR * truth.diagonal
    covered = cKDTree(turned).query(truth.points)[0] <= NEAR * truth.diagonal
    row: dict[str, Any] = {"chamfer": chamfer, "best_yaw_deg": turn, "shapes_found": list(shapes), "parts": []}
    row["right_shapes"] = shapes == composite.shapes or (
        composite.layout == "beside" and shapes == composite.shapes[::-1]
    )
    row["candidate_chamfer"] = candidates
    parts_right = True
    for i, shape in enumerate(composite.shapes):
        present = bool(covered[truth.part == i].mean() >= PRESENT_SHARE)
        mine = near & (truth.part[index] == i)
        colour = COLOUR_NAMES[int(_nearest_names(rgb[mine].mean(0)[None])[0])] if mine.any() else None
        want = target.colours[i]
        row["parts"].append(
            {"shape": shape, "covered": round(float(covered[truth.part == i].mean()), 3), "colour": colour}
        )
        parts_right &= present and (want is None or colour == want)
    row["parts_right"] = parts_right
    row["relation_right"] = relation_holds(target, pred, rgb)
    if composite.layout == "front" and target.specified:
        row["marker_regions"], row["front_azimuth_deg"] = marker_regions(mesh, target)
        row["janus"] = row["marker_regions"] > 1
    row["right"] = bool(
        chamfer <= CHAMFER_RIGHT and row["right_shapes"] and parts_right and row["relation_right"] is not False
    )
    return row
