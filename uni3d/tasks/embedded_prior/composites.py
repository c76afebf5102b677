"""Composite objects of the shapes dataset: two primitives placed in a layout, with one colour per part.

A :class:`Composite` is a layout and its parts' shapes; its geometry is the union of the parts, each a primitive
of :mod:`~uni3d.tasks.embedded_prior.primitives` scaled by ``s``, turned by ``R`` and moved to ``c``:
``d(p) = min_i s_i d_i(R_i^T (p - c_i) / s_i)``. Scaling a distance bound by ``s`` and rotating or moving its
argument keep it a distance bound, and the minimum of bounds bounds the union, so sphere tracing stays safe.
The part a surface point belongs to is the one whose distance is smallest there (what colours it).

Layouts (the scene's convention: ``+y`` up, ``+z`` the object's front, :mod:`uni3d.models.views`):

- ``single``: one primitive at scale 1 (part 1 absent);
- ``front``: a body (sphere, cube or cylinder) with a marker on its ``+z`` face that gives it a front: a cone
  pointing forward (a *nose*), a cylinder along ``z`` (a *handle*) or a small sphere (a *knob*); seen head-on
  from azimuth 0, in profile from 90, hidden from 180, which is what makes a Janus failure countable;
- ``stack``: part 0 resting on top of part 1, both at :data:`PAIR_SCALE`, touching, centred on the ``y`` axis;
- ``beside``: part 0 and part 1 side by side along ``x`` on a common floor, part 0 on the ``side`` of the
  centre (``+1``: ``+x``, ``-1``: ``-x``), a gap of :data:`PAIR_GAP` between them.

Every layout is centred so that it lies inside the ball of radius
:data:`~uni3d.tasks.embedded_prior.primitives.BOUND_RADIUS` (tested), which the renderer and the cameras assume.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from uni3d.errors import UsageError
from uni3d.tasks.embedded_prior.primitives import COLOURS, SHAPES, SdfFn

LAYOUTS: tuple[str, ...] = ("single", "front", "stack", "beside")
BODY_SHAPES: tuple[str, ...] = ("sphere", "cube", "cylinder")
"""Bodies of a ``front`` object: shapes with a face to put the marker on."""
MARKERS: dict[str, str] = {"cone": "nose", "cylinder": "handle", "sphere": "knob"}
"""A ``front`` marker's shape -> the caption word for the part it is."""
BODY_SCALE, MARKER_SCALE = 0.75, 0.4
PAIR_SCALE, PAIR_GAP = 0.55, 0.06
MARKER_SINK = 0.04
"""How far a marker sinks into its body's face (world units), so the two read as one object."""

_PROFILE_HALF, _PROFILE_STEPS = 0.6, 129
_STEP = 2 * _PROFILE_HALF / (_PROFILE_STEPS - 1)
"""The square ``|x|, |z| <= 0.6`` and column ``|y| <= 0.6`` (every primitive fits) sampled for :func:`profile`."""


@functools.cache
def profile(shape: str) -> tuple[np.ndarray, np.ndarray]:
    """The highest and lowest inside point over each ``(x, z)`` of a grid, ``top, bottom (S, S)`` (``nan`` where the
    column misses the primitive), at scale 1: what stacking and spacing parts needs, read off the distance itself."""
    axis = torch.linspace(-_PROFILE_HALF, _PROFILE_HALF, _PROFILE_STEPS)
    x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
    inside = (SHAPES[shape](torch.stack([x, y, z], -1).reshape(-1, 3)) < 0).view(x.shape)
    heights = y.masked_fill(~inside, float("nan"))
    return heights.nan_to_num(-math.inf).amax(1).numpy(), heights.nan_to_num(math.inf).amin(1).numpy()


def half_height(shape: str) -> float:
    """A primitive's half extent along ``y`` at scale 1 (the last inside sample plus half a grid step)."""
    return float(profile(shape)[0].max()) + _STEP / 2


def half_width(shape: str) -> float:
    """A primitive's half extent along ``x`` (and, all being symmetric, ``z``) at scale 1."""
    covered = np.isfinite(profile(shape)[0]).any(1)
    axis = np.linspace(-_PROFILE_HALF, _PROFILE_HALF, _PROFILE_STEPS)
    return float(np.abs(axis[covered]).max()) + _STEP / 2


def resting_height(upper: str, lower: str) -> float:
    """How far above the lower part's centre the upper part's centre sits when it rests on it (both at scale 1,
    on one vertical axis): the largest over the footprint of the lower's top minus the upper's bottom, so a ring
    rests on a cone's sides and a ball sinks into a ring's hole until they touch."""
    top, bottom = profile(lower)[0], profile(upper)[1]
    both = np.isfinite(top) & np.isfinite(bottom)
    return float((top[both] - bottom[both]).max())


@dataclass(frozen=True)
class Placement:
    """One part's pose: scale ``s``, rotation ``R`` (local to world, row-major ``3 x 3``) and centre ``c``."""

    scale: float
    centre: tuple[float, float, float]
    rotation: tuple[tuple[float, float, float], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


_NOSE_TURN = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 1.0, 0.0))
"""A quarter turn about ``x`` taking the primitive's ``+y`` axis (a cone's apex, a cylinder's axis) to ``+z``."""


@dataclass(frozen=True)
class Composite:
    """A layout of one or two primitives: ``shapes[0]`` is the body, the upper part, or part 0 beside part 1."""

    layout: str
    shapes: tuple[str, ...]
    side: int = 1

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise UsageError(f"unknown layout {self.layout!r}; valid: {', '.join(LAYOUTS)}")
        unknown = [s for s in self.shapes if s not in SHAPES]
        if unknown:
            raise UsageError(f"unknown shape {unknown[0]!r}; valid: {', '.join(SHAPES)}")
        if len(self.shapes) != (1 if self.layout == "single" else 2):
            raise UsageError(
                f"a {self.layout} layout has {1 if self.layout == 'single' else 2} parts, got {self.shapes}"
            )
        if self.layout == "front" and (self.shapes[0] not in BODY_SHAPES or self.shapes[1] not in MARKERS):
            raise UsageError(f"a front object is a {'/'.join(BODY_SHAPES)} with a {'/'.join(MARKERS)} marker")
        if self.side not in (-1, 1):
            raise UsageError(f"side must be -1 or 1, got {self.side}")

    def placements(self) -> list[Placement]:
        """Each part's pose, in ``shapes`` order (see the module docstring)."""
        a = self.shapes[0]
        if self.layout == "single":
            return [Placement(1.0, (0.0, 0.0, 0.0))]
        b = self.shapes[1]
        if self.layout == "front":
            body = half_width(a) * BODY_SCALE
            marker = half_height(b) * MARKER_SCALE  # its y extent, turned onto z
            back, tip = -body, body + 2 * marker - MARKER_SINK
            shift = -(back + tip) / 2  # centre the object's z extent on the origin
            return [
                Placement(BODY_SCALE, (0.0, 0.0, shift)),
                Placement(MARKER_SCALE, (0.0, 0.0, shift + body + marker - MARKER_SINK), _NOSE_TURN),
            ]
        ha, hb = half_height(a) * PAIR_SCALE, half_height(b) * PAIR_SCALE
        if self.layout == "stack":
            lift = resting_height(a, b) * PAIR_SCALE
            low = (
                -(lift + ha - hb) / 2
            )  # the lower centre that puts the pair's extent, low - hb to low + lift + ha, at 0
            return [Placement(PAIR_SCALE, (0.0, low + lift, 0.0)), Placement(PAIR_SCALE, (0.0, low, 0.0))]
        wa, wb = half_width(a) * PAIR_SCALE, half_width(b) * PAIR_SCALE
        floor = -max(ha, hb)
        span = 2 * (wa + wb) + PAIR_GAP
        xa, xb = span / 2 - wa, -(span / 2 - wb)
        return [
            Placement(PAIR_SCALE, (self.side * xa, floor + ha, 0.0)),
            Placement(PAIR_SCALE, (self.side * xb, floor + hb, 0.0)),
        ]

    def part_sdfs(self) -> list[SdfFn]:
        """Each part's signed-distance bound in world coordinates (``s d(R^T (p - c) / s)``)."""
        return [_placed(SHAPES[s], pose) for s, pose in zip(self.shapes, self.placements(), strict=True)]

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        """The union's distance bound ``(N,)`` at ``points (N, 3)``: the minimum over the parts."""
        return torch.stack([f(points) for f in self.part_sdfs()]).amin(0)


def _placed(sdf: SdfFn, pose: Placement) -> SdfFn:
    rotation = torch.tensor(pose.rotation)
    centre = torch.tensor(pose.centre)

    def placed(p: torch.Tensor) -> torch.Tensor:
        local = (p - centre.to(p)) @ rotation.to(p) / pose.scale  # row vectors: R^T (p - c) is (p - c) @ R
        return sdf(local) * pose.scale

    return placed


def bounding_radius(composite: Composite, resolution: int = 64) -> float:
    """The largest ``|p|`` of a grid point inside ``composite`` (a check that it fits the scene's bound)."""
    axis = torch.linspace(-1.0, 1.0, resolution)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    inside = grid[composite.sdf(grid) < 0]
    return float(inside.norm(dim=-1).max()) if len(inside) else 0.0


def all_composites() -> list[Composite]:
    """Every geometry the dataset draws: each single primitive, body x marker, and ordered pair in each relation."""
    shapes = list(SHAPES)
    out = [Composite("single", (s,)) for s in shapes]
    out += [Composite("front", (b, m)) for b in BODY_SHAPES for m in MARKERS]
    out += [Composite("stack", (a, b)) for a in shapes for b in shapes]
    out += [Composite("beside", (a, b), side) for a in shapes for b in shapes for side in (1, -1)]
    return out


def combination_key(composite: Composite, colours: tuple[str, ...]) -> tuple[object, ...]:
    """What makes two coloured composites the same object: a ``beside`` pair in either order and on either side is
    one; a body and its marker, or an upper and a lower part, are ordered."""
    parts = tuple(zip(composite.shapes, colours, strict=True))
    return (composite.layout, frozenset(parts)) if composite.layout == "beside" else (composite.layout, parts)


def held_out_combinations(per_layout: int = 4, seed: int = 0) -> list[tuple[Composite, tuple[str, str]]]:
    """Coloured composites the dataset never draws, ``per_layout`` of each of ``front``, ``stack``, ``beside``
    (parts in different colours): the composite benchmark's prompts, new to the prior in that exact combination."""
    rng = np.random.default_rng(seed)
    colours = list(COLOURS)
    out: list[tuple[Composite, tuple[str, str]]] = []
    seen: set[tuple] = set()
    for layout in ("front", "stack", "beside"):
        pool = [c for c in all_composites() if c.layout == layout and c.side == 1 and c.shapes[0] != c.shapes[1]]
        while sum(c.layout == layout for c, _ in out) < per_layout:
            composite = pool[int(rng.integers(len(pool)))]
            pair = tuple(str(c) for c in rng.choice(colours, 2, replace=False))
            key = combination_key(composite, pair)
            if key not in seen:
                seen.add(key)
                out.append((composite, pair))
    return out
