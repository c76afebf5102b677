"""The shapes dataset of the embedded prior: primitives in named colours from random views, with captions.

Each item draws a shape, a colour, a caption kind and a camera from :class:`uni3d.scene.CameraSampler` (the
optimizer's sampler and convention) with one seeded generator, so a seed fixes the dataset. The caption names
what the kind allows (``full``: "a red cube", ``shape``: "a cube", ``colour``: "a red object"; under-specified
prompts then have several right answers) plus the camera's words in the config's view scheme
(:mod:`uni3d.models.views`: ``coarse`` "..., side view", ``angles`` "..., side view, azimuth 90, elevation 15,
distance 3").
The ground-truth ``shape`` and ``colour`` labels are kept whatever the caption says, for benchmarks.

File: one ``.npz`` (written atomically) with ``images (N, S, S, 3) uint8``, ``alpha (N, S, S) uint8``, integer
labels ``shape``, ``colour``, ``caption_kind``, ``view``, float32 ``elevation``, ``azimuth``, ``distance``,
``fov`` (degrees, world units), ``captions``, the name tables and the generating config as JSON.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from uni3d.errors import UsageError
from uni3d.io import atomic_write
from uni3d.models.views import VIEW_NAMES, VIEW_SCHEMES, ViewScheme, apparent_distance, camera_angles, view_index
from uni3d.models.vocabulary import COLOUR_NAMES, SHAPE_NAMES
from uni3d.scene.cameras import CameraSampler
from uni3d.tasks.embedded_prior.primitives import SHAPES, palette
from uni3d.tasks.embedded_prior.render import render_primitive

FORMAT = "uni3d-shapes-1"
CAPTION_KINDS: tuple[str, ...] = ("full", "shape", "colour")
_CHUNK = 64
"""Views rendered per call (memory: ``64 x (2 x 64)^2`` rays at the largest common size)."""


@dataclass(frozen=True)
class ShapesDatasetConfig:
    """What fixes a dataset: size, seed, camera ranges (degrees, world units) and caption-kind shares."""

    n: int = 20000
    size: int = 32
    seed: int = 0
    supersample: int = 2
    elevation_deg: tuple[float, float] = (-10.0, 80.0)
    azimuth_deg: tuple[float, float] = (-180.0, 180.0)
    distance: tuple[float, float] = (2.5, 3.5)
    fov_deg: tuple[float, float] = (35.0, 45.0)
    p_shape_only: float = 0.15
    p_colour_only: float = 0.15
    views: str = "coarse"

    def __post_init__(self) -> None:
        if self.n < 1:
            raise UsageError(f"the dataset needs at least 1 item, got --n {self.n}")
        if not 8 <= self.size <= 512:
            raise UsageError(f"image size must be 8-512 pixels, got --size {self.size}")
        if not 1 <= self.supersample <= 8:
            raise UsageError(f"supersample must be 1-8, got {self.supersample}")
        if min(self.p_shape_only, self.p_colour_only) < 0 or self.p_shape_only + self.p_colour_only > 1:
            raise UsageError("caption shares p_shape_only, p_colour_only must be >= 0 and sum to <= 1")
        if self.views not in VIEW_SCHEMES:
            raise UsageError(f"unknown view scheme {self.views!r}; valid: {', '.join(VIEW_SCHEMES)}")

    @property
    def view_scheme(self) -> ViewScheme:
        """The :class:`ViewScheme` the captions are written in (and the prior trained on them must be prompted in)."""
        return VIEW_SCHEMES[self.views]

    def camera_sampler(self) -> CameraSampler:
        """The scene's random camera sampler with these ranges."""
        return CameraSampler(self.elevation_deg, self.azimuth_deg, self.distance, self.fov_deg)


@dataclass
class ShapesDataset:
    """Images, masks, labels and captions; see the module docstring for shapes and types."""

    images: np.ndarray
    alpha: np.ndarray
    shape: np.ndarray
    colour: np.ndarray
    caption_kind: np.ndarray
    view: np.ndarray
    elevation: np.ndarray
    azimuth: np.ndarray
    distance: np.ndarray
    fov: np.ndarray
    captions: list[str]
    config: ShapesDatasetConfig

    def __len__(self) -> int:
        return len(self.images)


def _article(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def subject(shape: str, colour: str, kind: str) -> str:
    """``full``: "a red cube"; ``shape``: "a cube"; ``colour``: "a red object" (a caption before its view words)."""
    if kind == "full":
        return _article(f"{colour} {shape}")
    if kind == "shape":
        return _article(shape)
    if kind == "colour":
        return _article(f"{colour} object")
    raise UsageError(f"unknown caption kind {kind!r}; valid: {', '.join(CAPTION_KINDS)}")


def make_shapes_dataset(cfg: ShapesDatasetConfig, progress: bool = False) -> ShapesDataset:
    """Draw the labels and cameras of ``cfg`` and render every view (grouped by shape, ``_CHUNK`` at a time)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    shape = torch.randint(len(SHAPE_NAMES), (cfg.n,), generator=gen)
    colour = torch.randint(len(COLOUR_NAMES), (cfg.n,), generator=gen)
    shares = torch.tensor([1 - cfg.p_shape_only - cfg.p_colour_only, cfg.p_shape_only, cfg.p_colour_only])
    kind = torch.multinomial(shares, cfg.n, replacement=True, generator=gen)
    cams = cfg.camera_sampler().sample(cfg.n, cfg.size, generator=gen)
    elevation, azimuth = camera_angles(cams)
    view = view_index(elevation, azimuth)

    images = torch.empty(cfg.n, cfg.size, cfg.size, 3, dtype=torch.uint8)
    alpha = torch.empty(cfg.n, cfg.size, cfg.size, dtype=torch.uint8)
    albedo = palette()[colour]
    order = torch.argsort(shape, stable=True)
    with tqdm(total=cfg.n, desc="rendering shapes", unit="img", disable=not progress) as bar:
        for start in range(0, cfg.n, _CHUNK):
            idx = order[start : start + _CHUNK]
            for s in shape[idx].unique().tolist():
                sel = idx[shape[idx] == s]
                rgb, a = render_primitive(SHAPES[SHAPE_NAMES[s]], albedo[sel], cams[sel], cfg.supersample)
                images[sel] = (rgb * 255).round().clamp(0, 255).to(torch.uint8)
                alpha[sel] = (a * 255).round().to(torch.uint8)
            bar.update(len(idx))

    distance = apparent_distance(cams)
    items = zip(shape.tolist(), colour.tolist(), kind.tolist(), strict=True)
    angles = zip(elevation.tolist(), azimuth.tolist(), distance.tolist(), strict=True)
    captions = [
        cfg.view_scheme.caption(subject(SHAPE_NAMES[s], COLOUR_NAMES[c], CAPTION_KINDS[k]), *camera)
        for (s, c, k), camera in zip(items, angles, strict=True)
    ]
    return ShapesDataset(
        images=images.numpy(),
        alpha=alpha.numpy(),
        shape=shape.numpy(),
        colour=colour.numpy(),
        caption_kind=kind.numpy(),
        view=view.numpy(),
        elevation=elevation.float().numpy(),
        azimuth=azimuth.float().numpy(),
        distance=cams.c2w[:, :3, 3].norm(dim=-1).float().numpy(),
        fov=torch.rad2deg(cams.fov_y).float().numpy(),
        captions=captions,
        config=cfg,
    )


_ARRAYS = ("images", "alpha", "shape", "colour", "caption_kind", "view", "elevation", "azimuth", "distance", "fov")


def save_shapes_dataset(data: ShapesDataset, path: str | Path) -> Path:
    """Write ``data`` as one compressed ``.npz`` through :func:`uni3d.io.atomic_write`."""
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        format=np.array(FORMAT),
        config=np.array(json.dumps(asdict(data.config))),
        captions=np.array(data.captions),
        shape_names=np.array(SHAPE_NAMES),
        colour_names=np.array(COLOUR_NAMES),
        palette=palette().numpy(),
        view_names=np.array(VIEW_NAMES),
        caption_kinds=np.array(CAPTION_KINDS),
        **{name: getattr(data, name) for name in _ARRAYS},
    )
    return atomic_write(path, buf.getvalue())


def load_shapes_dataset(path: str | Path) -> ShapesDataset:
    """Read a file written by :func:`save_shapes_dataset`; a missing or foreign file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no shapes dataset at {path}; make one with: uni3d make-shapes-dataset --out {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "format" not in z.files or str(z["format"]) != FORMAT:
                raise UsageError(f"{path} is not a {FORMAT} dataset file")
            if tuple(z["shape_names"].tolist()) != SHAPE_NAMES or tuple(z["colour_names"].tolist()) != COLOUR_NAMES:
                raise UsageError(f"{path} uses other shape/colour names than this version; regenerate it")
            raw = json.loads(str(z["config"]))
            cfg = ShapesDatasetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
            arrays = {name: z[name] for name in _ARRAYS}
            captions = z["captions"].tolist()
    except UsageError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        detail = " ".join(str(err).split())[:120]
        raise UsageError(f"{path} is not a readable {FORMAT} dataset file ({type(err).__name__}: {detail})") from err
    return ShapesDataset(captions=captions, config=cfg, **arrays)
