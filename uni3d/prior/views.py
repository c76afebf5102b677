"""View-dependent prompts (DreamFusion section 3.2): a suffix naming the view, chosen from the camera's angles.

Angles follow :mod:`uni3d.scene.cameras`: azimuth about ``+y`` from ``+z`` (the object's front) towards ``+x``,
elevation from the ``xz`` plane towards ``+y``. ``overhead`` wins above ``OVERHEAD_ELEVATION``; otherwise
``front`` within ``FRONT_HALF_ANGLE`` of azimuth 0, ``back`` within ``BACK_HALF_ANGLE`` of 180, else ``side``.
The dataset captions and the prior's prompts use this one function. A prompt that already ends with a view
(``"a red cube, front view"``) has it replaced by each camera's, never doubled (:func:`split_view`).
"""

from __future__ import annotations

import re

import torch

from uni3d.scene.cameras import Cameras

VIEW_NAMES: tuple[str, ...] = ("front", "side", "back", "overhead")
OVERHEAD_ELEVATION = 60.0
FRONT_HALF_ANGLE = 45.0
BACK_HALF_ANGLE = 45.0


def camera_angles(cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """``(elevation, azimuth)`` in degrees, each ``(B,)``, of the camera positions seen from the origin."""
    eye = cameras.c2w[:, :3, 3]
    elevation = torch.rad2deg(torch.asin((eye[:, 1] / eye.norm(dim=-1)).clamp(-1, 1)))
    azimuth = torch.rad2deg(torch.atan2(eye[:, 0], eye[:, 2]))
    return elevation, azimuth


def view_index(elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor) -> torch.Tensor:
    """Index into :data:`VIEW_NAMES` ``(B,)`` for angles in degrees (azimuth of any wrap)."""
    az = torch.remainder(azimuth_deg + 180.0, 360.0) - 180.0  # [-180, 180)
    idx = torch.full_like(az, VIEW_NAMES.index("side"), dtype=torch.long)
    idx[az.abs() <= FRONT_HALF_ANGLE] = VIEW_NAMES.index("front")
    idx[az.abs() >= 180.0 - BACK_HALF_ANGLE] = VIEW_NAMES.index("back")
    idx[elevation_deg >= OVERHEAD_ELEVATION] = VIEW_NAMES.index("overhead")
    return idx


_TRAILING_VIEW = re.compile(rf"[\s,;:.!-]*\b({'|'.join(VIEW_NAMES)})\s+view\W*$", re.IGNORECASE)
_TRAILING_MARKS = re.compile(r"[\s,;:.!-]+$")


def split_view(prompt: str) -> tuple[str, str | None]:
    """``"a red cube, front view."`` -> ``("a red cube", "front")``: the prompt without a trailing view phrase
    (one of :data:`VIEW_NAMES` followed by ``view``) or trailing punctuation, and the view it named (``None``)."""
    match = _TRAILING_VIEW.search(prompt)
    base = prompt[: match.start()] if match else prompt
    return _TRAILING_MARKS.sub("", base), match.group(1).lower() if match else None


def with_view(prompt: str, view: str) -> str:
    """``"a red cube"`` -> ``"a red cube, side view"``; a view the prompt ends with is replaced, not doubled
    (``"a red cube, front view"`` -> ``"a red cube, side view"``), and trailing punctuation dropped."""
    return f"{split_view(prompt)[0]}, {view} view"


def view_prompts(prompt: str, elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor) -> list[str]:
    """One view-suffixed prompt per camera angle pair."""
    return [with_view(prompt, VIEW_NAMES[i]) for i in view_index(elevation_deg, azimuth_deg).tolist()]
