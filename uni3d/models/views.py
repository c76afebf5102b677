"""View-dependent prompts (DreamFusion section 3.2): words naming each camera's view, appended to the prompt.

Angles follow :mod:`uni3d.scene.cameras`: azimuth about ``+y`` from ``+z`` (the object's front) towards ``+x``,
elevation from the ``xz`` plane towards ``+y``. ``overhead`` wins above ``OVERHEAD_ELEVATION``; otherwise
``front`` within ``FRONT_HALF_ANGLE`` of azimuth 0, ``back`` within ``BACK_HALF_ANGLE`` of 180, else ``side``.

A prior is trained with one :class:`ViewScheme` and must be prompted with it; the scheme is saved beside the
weights (:data:`VIEWS_FILE`) and a folder without one (any Stable Diffusion) gets ``coarse``:

- ``coarse``: ``"a red cube, side view"``: DreamFusion's four words, 90 degrees wide. They cannot tell a cube's
  turn about the vertical axis, how much of its top shows, nor its size in the image.
- ``angles``: ``"a red cube, side view, azimuthninety, elevationfifteen, distancethreehundred"``: the coarse
  words, then the camera's azimuth in ``[0, 360)`` and elevation in degrees, each rounded to a multiple of its step,
  and its apparent distance (:func:`apparent_distance`, rounded to ``distance_step``, in hundredths): the camera
  itself, up to the rounding, as camera-conditioned priors (Zero-1-to-3, MVDream) are told it. Each value is one
  word, the kind and the number spelt out (:func:`spell`), so that a caption tokenizer holds it as one token
  (:meth:`ViewScheme.vocabulary`): written in digits ("azimuth 90"), CLIP's tokenizer splits a number into single
  digits, and a small text encoder did not learn to read them (docs/embedded_prior.md).

The dataset captions and the prior's prompts use these functions. A prompt that already ends with a view
(``"a red cube, front view"``, with or without the angle words) has it replaced by each camera's, never doubled
(:func:`split_view`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from uni3d.errors import UsageError
from uni3d.io import save_json
from uni3d.scene.cameras import Cameras

VIEW_NAMES: tuple[str, ...] = ("front", "side", "back", "overhead")
OVERHEAD_ELEVATION = 60.0
FRONT_HALF_ANGLE = 45.0
BACK_HALF_ANGLE = 45.0
REFERENCE_FOV_DEG = 40.0
"""The vertical field of view an apparent distance refers to (the middle of the camera sampler's default range)."""
ANGLE_KINDS: tuple[str, ...] = ("azimuth", "elevation", "distance")
"""What the ``angles`` scheme's words start with."""
VIEWS_FILE = "uni3d_views.json"
"""The file in a prior's folder that names its :class:`ViewScheme`."""


def camera_angles(cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """``(elevation, azimuth)`` in degrees, each ``(B,)``, of the camera positions seen from the origin."""
    eye = cameras.c2w[:, :3, 3]
    elevation = torch.rad2deg(torch.asin((eye[:, 1] / eye.norm(dim=-1)).clamp(-1, 1)))
    azimuth = torch.rad2deg(torch.atan2(eye[:, 0], eye[:, 2]))
    return elevation, azimuth


def apparent_distance(cameras: Cameras) -> torch.Tensor:
    """``(B,)``: the distance from the origin at which a camera of :data:`REFERENCE_FOV_DEG` would show the object at
    the size these cameras show it, ``|eye| tan(fov / 2) / tan(reference / 2)`` (a pinhole image scales with
    ``1 / (distance tan(fov / 2))``)."""
    reference = math.tan(math.radians(REFERENCE_FOV_DEG) / 2)
    return cameras.c2w[:, :3, 3].norm(dim=-1) * torch.tan(cameras.fov_y / 2) / reference


def view_index(elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor) -> torch.Tensor:
    """Index into :data:`VIEW_NAMES` ``(B,)`` for angles in degrees (azimuth of any wrap)."""
    az = torch.remainder(azimuth_deg + 180.0, 360.0) - 180.0  # [-180, 180)
    idx = torch.full_like(az, VIEW_NAMES.index("side"), dtype=torch.long)
    idx[az.abs() <= FRONT_HALF_ANGLE] = VIEW_NAMES.index("front")
    idx[az.abs() >= 180.0 - BACK_HALF_ANGLE] = VIEW_NAMES.index("back")
    idx[elevation_deg >= OVERHEAD_ELEVATION] = VIEW_NAMES.index("overhead")
    return idx


_TRAILING_VIEW = re.compile(
    rf"[\s,;:.!-]*\b({'|'.join(VIEW_NAMES)})\s+view"
    + "".join(rf"(?:\s*,?\s*{kind}[a-z]+)?" for kind in ANGLE_KINDS)
    + r"\W*$",
    re.IGNORECASE,
)
_TRAILING_MARKS = re.compile(r"[\s,;:.!-]+$")


def split_view(prompt: str) -> tuple[str, str | None]:
    """``"a red cube, front view."`` -> ``("a red cube", "front")``: the prompt without a trailing view phrase
    (one of :data:`VIEW_NAMES` followed by ``view``, and any angle words of the ``angles`` scheme) or trailing
    punctuation, and the view it named (``None``)."""
    match = _TRAILING_VIEW.search(prompt)
    base = prompt[: match.start()] if match else prompt
    return _TRAILING_MARKS.sub("", base), match.group(1).lower() if match else None


def _rounded(value: float, step: float) -> float:
    return step * math.floor(value / step + 0.5)


_ONES = (
    *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"),
    *("thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"),
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def spell(n: int) -> str:
    """An integer in English words run together, letters only: ``345`` -> ``"threehundredfortyfive"``,
    ``-15`` -> ``"minusfifteen"``."""
    if n < 0:
        return "minus" + spell(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + (_ONES[n % 10] if n % 10 else "")
    for size, name in ((1000, "thousand"), (100, "hundred")):
        if n >= size:
            return spell(n // size) + name + (spell(n % size) if n % size else "")
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class ViewScheme:
    """How a camera becomes the words after the prompt (module docstring); steps in degrees and world units."""

    name: str = "coarse"
    azimuth_step: float = 15.0
    elevation_step: float = 15.0
    distance_step: float = 0.25

    def __post_init__(self) -> None:
        if self.name not in ("coarse", "angles"):
            raise UsageError(f"unknown view scheme {self.name!r}; valid: coarse, angles")
        if min(self.azimuth_step, self.elevation_step, self.distance_step) <= 0:
            raise UsageError("view scheme steps must be > 0")

    def suffix(self, elevation_deg: float, azimuth_deg: float, distance: float) -> str:
        """The words after the prompt for one camera: ``"side view"`` or ``"side view, azimuth 90, ..."``."""
        view = VIEW_NAMES[int(view_index(torch.tensor([elevation_deg]), torch.tensor([azimuth_deg]))[0])]
        if self.name == "coarse":
            return f"{view} view"
        azimuth = _rounded(azimuth_deg, self.azimuth_step) % 360.0
        elevation = _rounded(elevation_deg, self.elevation_step)
        far = _rounded(distance, self.distance_step)
        return f"{view} view, {self._words(azimuth, elevation, far)}"

    @staticmethod
    def _words(azimuth: float, elevation: float, distance: float) -> str:
        """``"azimuthninety, elevationfifteen, distancethreehundred"`` (degrees; distance in hundredths)."""
        values = (round(azimuth), round(elevation), round(100 * distance))
        return ", ".join(kind + spell(v) for kind, v in zip(ANGLE_KINDS, values, strict=True))

    def vocabulary(
        self, elevation_deg: tuple[float, float] = (-90.0, 90.0), distance: tuple[float, float] = (0.5, 8.0)
    ) -> list[str]:
        """Every angle word this scheme writes for cameras in these ranges (a caption tokenizer's extra words)."""
        if self.name == "coarse":
            return []

        def steps(lo: float, hi: float, step: float) -> list[float]:
            return [step * k for k in range(math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9) + 1)]

        words = [f"azimuth{spell(round(a))}" for a in steps(0.0, 360.0 - 1e-6, self.azimuth_step)]
        words += [f"elevation{spell(round(e))}" for e in steps(*elevation_deg, self.elevation_step)]
        return words + [f"distance{spell(round(100 * d))}" for d in steps(*distance, self.distance_step)]

    def caption(self, prompt: str, elevation_deg: float, azimuth_deg: float, distance: float) -> str:
        """``prompt`` with this camera's words; a view the prompt ends with is replaced (:func:`split_view`)."""
        return f"{split_view(prompt)[0]}, {self.suffix(elevation_deg, azimuth_deg, distance)}"

    def prompts(self, prompt: str, cameras: Cameras) -> list[str]:
        """One view-worded prompt per camera."""
        elevation, azimuth = camera_angles(cameras)
        distance = apparent_distance(cameras)
        angles = zip(elevation.tolist(), azimuth.tolist(), distance.tolist(), strict=True)
        return [self.caption(prompt, e, a, d) for e, a, d in angles]

    def example_suffixes(self) -> list[str]:
        """Suffixes spanning the scheme's forms (every view word, short and long angle words): the context-length
        check tokenizes the prompt with each."""
        grid = [(e, a, d) for e in (-80.0, 10.0, 80.0) for a in (0.0, 30.0, 100.0, 280.0) for d in (3.0, 7.8)]
        return sorted({self.suffix(e, a, d) for e, a, d in grid})


COARSE = ViewScheme("coarse")
ANGLES = ViewScheme("angles")
VIEW_SCHEMES: dict[str, ViewScheme] = {"coarse": COARSE, "angles": ANGLES}
"""The schemes a dataset can be captioned with (``uni3d make-shapes-dataset --views``)."""


def save_view_scheme(folder: str | Path, scheme: ViewScheme) -> Path:
    """Write :data:`VIEWS_FILE` into a prior's folder."""
    return save_json(Path(folder) / VIEWS_FILE, asdict(scheme))


def load_view_scheme(folder: str | Path) -> ViewScheme:
    """The scheme a prior's folder names, or :data:`COARSE` where it names none (a hub id, any SD folder)."""
    path = Path(str(folder)).expanduser() / VIEWS_FILE
    if not path.is_file():
        return COARSE
    try:
        return ViewScheme(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as err:
        raise UsageError(f"{path} is not a readable view scheme ({type(err).__name__}); delete or fix it") from err
