"""The primitives and colours of the shapes dataset: signed-distance bounds and a named palette.

Every shape is upright (``+y`` up, the scene convention), centred at the origin and inside the ball of radius
``BOUND_RADIUS`` (where sphere tracing starts) and the cube of half side ``BOX_HALF``, so a camera of
:class:`uni3d.scene.CameraSampler`'s default ranges sees it whole (a pyramid's corners can leave the nearest,
narrowest views). Each
function returns ``d(p)``, a signed distance or a lower bound of it (``|d| <= distance to the surface``,
negative inside), which is what sphere tracing needs (Hart 1996): exact for sphere, cube, cylinder and torus;
for the cone and pyramid the maximum of the signed distances to their bounding planes/cones (exact on the faces,
conservative near edges). Sizes are in world units; the ground-truth meshes of later benchmarks use the same
numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

SdfFn = Callable[[torch.Tensor], torch.Tensor]
"""Points ``(N, 3)`` -> signed distance (bound) ``(N,)``."""

SPHERE_RADIUS = 0.5
CUBE_HALF = 0.4
CYLINDER_RADIUS, CYLINDER_HALF_HEIGHT = 0.4, 0.45
CONE_RADIUS, CONE_HEIGHT = 0.5, 1.0
TORUS_MAJOR, TORUS_MINOR = 0.4, 0.15
PYRAMID_HALF_BASE, PYRAMID_HEIGHT = 0.5, 1.0
BOUND_RADIUS = 0.9
"""Every primitive lies inside this ball (the farthest point is a pyramid's base corner)."""
BOX_HALF = 0.75
"""Every primitive lies inside the cube ``|x|, |y|, |z| <= BOX_HALF``."""


def _radial(p: torch.Tensor) -> torch.Tensor:
    """Distance to the ``y`` axis."""
    return torch.hypot(p[:, 0], p[:, 2])


def sphere(p: torch.Tensor) -> torch.Tensor:
    """``|p| - r``."""
    return p.norm(dim=-1) - SPHERE_RADIUS


def cube(p: torch.Tensor) -> torch.Tensor:
    """Axis-aligned box: ``|max(q, 0)| + min(max_i q_i, 0)`` with ``q = |p| - b``."""
    q = p.abs() - CUBE_HALF
    return q.clamp(min=0).norm(dim=-1) + q.amax(-1).clamp(max=0)


def _rect2d(rho: torch.Tensor, y: torch.Tensor, half_w: float, half_h: float) -> torch.Tensor:
    """The box distance in the ``(rho, y)`` half-plane (a solid of revolution's cross-section)."""
    q = torch.stack([rho - half_w, y.abs() - half_h], -1)
    return q.clamp(min=0).norm(dim=-1) + q.amax(-1).clamp(max=0)


def cylinder(p: torch.Tensor) -> torch.Tensor:
    """Capped cylinder about ``y``: the box distance of its ``(rho, y)`` cross-section."""
    return _rect2d(_radial(p), p[:, 1], CYLINDER_RADIUS, CYLINDER_HALF_HEIGHT)


def torus(p: torch.Tensor) -> torch.Tensor:
    """Torus lying in the ``xz`` plane: ``|(rho - R, y)| - r``."""
    return torch.hypot(_radial(p) - TORUS_MAJOR, p[:, 1]) - TORUS_MINOR


def cone(p: torch.Tensor) -> torch.Tensor:
    """Cone, base disc at ``y = -h/2``, apex at ``y = +h/2``: max of the base plane and the lateral cone.

    The lateral surface is the line from ``(R, -h/2)`` to ``(0, h/2)`` in ``(rho, y)`` with outward unit
    normal ``(h, R) / sqrt(h^2 + R^2)``.
    """
    h, r = CONE_HEIGHT, CONE_RADIUS
    side = (_radial(p) * h + (p[:, 1] - h / 2) * r) / math.hypot(h, r)
    return torch.maximum(side, -h / 2 - p[:, 1])


def pyramid(p: torch.Tensor) -> torch.Tensor:
    """Square pyramid (base ``2b x 2b`` at ``y = -h/2``, faces towards ``+-x``, ``+-z``): max of its 5 planes."""
    h, b = PYRAMID_HEIGHT, PYRAMID_HALF_BASE
    # face through (b, -h/2) and (0, h/2) in the (|x| or |z|, y) plane, outward normal (h, b) / sqrt(h^2 + b^2)
    lateral = (p[:, [0, 2]].abs().amax(-1) * h + (p[:, 1] - h / 2) * b) / math.hypot(h, b)
    return torch.maximum(lateral, -h / 2 - p[:, 1])


SHAPES: dict[str, SdfFn] = {
    "sphere": sphere,
    "cube": cube,
    "cylinder": cylinder,
    "cone": cone,
    "torus": torus,
    "pyramid": pyramid,
}
"""Shape name -> signed-distance bound, in the label order of :data:`~uni3d.models.vocabulary.SHAPE_NAMES`."""

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "orange": (1.00, 0.50, 0.05),
    "yellow": (0.95, 0.85, 0.10),
    "green": (0.10, 0.65, 0.20),
    "blue": (0.10, 0.25, 0.85),
    "purple": (0.50, 0.15, 0.70),
    "pink": (1.00, 0.45, 0.70),
    "brown": (0.45, 0.25, 0.10),
    "grey": (0.50, 0.50, 0.50),
    "black": (0.05, 0.05, 0.05),
}
"""Colour name -> linear albedo in ``[0, 1]``, in the label order of :data:`~uni3d.models.vocabulary.COLOUR_NAMES`
(no white: the background is)."""


def palette() -> torch.Tensor:
    """The albedos ``(len(COLOURS), 3)`` in label order."""
    return torch.tensor(list(COLOURS.values()), dtype=torch.float32)
