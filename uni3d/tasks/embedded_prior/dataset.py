"""The shapes dataset of the embedded prior: primitives and composites in named colours from random views, captioned.

Each item draws a shape, a colour, a caption kind and a camera from :class:`uni3d.scene.CameraSampler` (the
optimizer's sampler and convention) with one seeded generator, so a seed fixes the dataset. The caption names
what the kind allows (``full``: "a red cube", ``shape``: "a cube", ``colour``: "a red object"; under-specified
prompts then have several right answers) plus the camera's words in the config's view scheme
(:mod:`uni3d.models.views`: ``coarse`` "..., side view", ``angles`` "..., side view, azimuth 90, elevation 15,
distance 3").
The ground-truth ``shape`` and ``colour`` labels are kept whatever the caption says, for benchmarks.

Composites (:mod:`uni3d.tasks.embedded_prior.composites`: a body with a marker that gives it a front, two parts
stacked or side by side) take the shares ``p_front``, ``p_stack``, ``p_beside`` of the items, from a second
seeded stream, never one of the benchmark's held-out combinations; ``wording="varied"`` draws each caption's
phrasing (:mod:`uni3d.tasks.embedded_prior.phrasing`) from a third. With no composites and ``plain`` wording the
labels, cameras and captions are those of a dataset of single primitives made before composites existed.

File: one ``.npz`` (written atomically) with ``images (N, S, S, 3) uint8``, ``alpha (N, S, S) uint8``, integer
labels ``shape``, ``colour``, ``caption_kind``, ``view``, float32 ``elevation``, ``azimuth``, ``distance``,
``fov`` (degrees, world units), ``captions``, the part labels ``layout``, ``part_shape (N, 2)``,
``part_colour (N, 2)`` (``-1``: no second part; part 0 is also ``shape``, ``colour``) and ``side``, the name
tables and the generating config as JSON.
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
from uni3d.tasks.embedded_prior.composites import (
    LAYOUTS,
    Composite,
    all_composites,
    combination_key,
    held_out_combinations,
)
from uni3d.tasks.embedded_prior.phrasing import WORDINGS, caption_subject
from uni3d.tasks.embedded_prior.primitives import palette
from uni3d.tasks.embedded_prior.render import render_parts

FORMAT = "uni3d-shapes-2"
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
    wording: str = "plain"
    p_front: float = 0.0
    p_stack: float = 0.0
    p_beside: float = 0.0

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
        if self.wording not in WORDINGS:
            raise UsageError(f"unknown wording {self.wording!r}; valid: {', '.join(WORDINGS)}")
        shares = (self.p_front, self.p_stack, self.p_beside)
        if min(shares) < 0 or sum(shares) > 1 + 1e-9:
            raise UsageError("composite shares --p-front, --p-stack, --p-beside must be >= 0 and sum to <= 1")

    @property
    def composite_shares(self) -> tuple[float, ...]:
        """The share of each layout of :data:`LAYOUTS` (singles take what the composites leave)."""
        return (max(0.0, 1 - self.p_front - self.p_stack - self.p_beside), self.p_front, self.p_stack, self.p_beside)

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
    layout: np.ndarray
    part_shape: np.ndarray
    part_colour: np.ndarray
    side: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


def subject(shape: str, colour: str, kind: str) -> str:
    """``full``: "a red cube"; ``shape``: "a cube"; ``colour``: "a red object" (a caption before its view words)."""
    return caption_subject(Composite("single", (shape,)), (colour,), kind=kind)


def _draw_composites(cfg: ShapesDatasetConfig, shape: torch.Tensor, colour: torch.Tensor) -> np.ndarray:
    """Layout, part shapes and colours and side of every item, ``(N, 6)`` ints: ``layout, s0, s1, c0, c1, side``.

    Items drawn single keep the first stream's shape and colour (``shape``, ``colour``), so a dataset without
    composites draws what one made before composites did. A composite draws from its own stream: the layout by
    ``cfg.composite_shares``, then its shapes, then two different colours, again until it is none of
    :func:`held_out_combinations`.
    """
    rng = np.random.default_rng([cfg.seed, 1])
    held = {combination_key(c, colours) for c, colours in held_out_combinations()}
    pools = {lay: [c for c in all_composites() if c.layout == lay] for lay in LAYOUTS[1:]}
    out = np.zeros((cfg.n, 6), dtype=np.int64)
    out[:, 1], out[:, 2], out[:, 3], out[:, 4], out[:, 5] = shape.numpy(), -1, colour.numpy(), -1, 1
    if sum(cfg.composite_shares[1:]) == 0:
        return out
    layouts = rng.choice(len(LAYOUTS), cfg.n, p=np.asarray(cfg.composite_shares) / sum(cfg.composite_shares))
    for i in np.flatnonzero(layouts):
        pool = pools[LAYOUTS[layouts[i]]]
        while True:
            composite = pool[int(rng.integers(len(pool)))]
            colours = tuple(str(c) for c in rng.choice(COLOUR_NAMES, 2, replace=False))
            if combination_key(composite, colours) not in held:
                break
        s0, s1 = (SHAPE_NAMES.index(x) for x in composite.shapes)
        c0, c1 = (COLOUR_NAMES.index(x) for x in colours)
        out[i] = layouts[i], s0, s1, c0, c1, composite.side
    return out


def item_composite(labels: np.ndarray) -> Composite:
    """The :class:`Composite` of one item's labels ``layout, s0, s1, c0, c1, side`` (:func:`_draw_composites`)."""
    layout, s0, s1, _, _, side = (int(v) for v in labels)
    shapes = (SHAPE_NAMES[s0],) if LAYOUTS[layout] == "single" else (SHAPE_NAMES[s0], SHAPE_NAMES[s1])
    return Composite(LAYOUTS[layout], shapes, side)


def make_shapes_dataset(cfg: ShapesDatasetConfig, progress: bool = False) -> ShapesDataset:
    """Draw the labels and cameras of ``cfg`` and render every view (grouped by geometry, ``_CHUNK`` at a time)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    shape = torch.randint(len(SHAPE_NAMES), (cfg.n,), generator=gen)
    colour = torch.randint(len(COLOUR_NAMES), (cfg.n,), generator=gen)
    shares = torch.tensor([1 - cfg.p_shape_only - cfg.p_colour_only, cfg.p_shape_only, cfg.p_colour_only])
    kind = torch.multinomial(shares, cfg.n, replacement=True, generator=gen)
    cams = cfg.camera_sampler().sample(cfg.n, cfg.size, generator=gen)
    elevation, azimuth = camera_angles(cams)
    view = view_index(elevation, azimuth)
    labels = _draw_composites(cfg, shape, colour)
    layout, parts_shape, parts_colour, side = labels[:, 0], labels[:, 1:3], labels[:, 3:5], labels[:, 5]

    images = torch.empty(cfg.n, cfg.size, cfg.size, 3, dtype=torch.uint8)
    alpha = torch.empty(cfg.n, cfg.size, cfg.size, dtype=torch.uint8)
    albedo = palette()[torch.from_numpy(parts_colour).clamp(min=0)]  # (N, 2, 3); an absent part's is never used
    geometry = [item_composite(row) for row in labels]
    groups: dict[Composite, list[int]] = {}
    for i, composite in enumerate(geometry):
        groups.setdefault(composite, []).append(i)
    with tqdm(total=cfg.n, desc="rendering shapes", unit="img", disable=not progress) as bar:
        for composite, members in groups.items():
            for start in range(0, len(members), _CHUNK):
                sel = torch.tensor(members[start : start + _CHUNK])
                parts = len(composite.shapes)
                rgb, a = render_parts(
                    composite.part_sdfs(), albedo[sel, :parts], cams[sel], supersample=cfg.supersample
                )
                images[sel] = (rgb * 255).round().clamp(0, 255).to(torch.uint8)
                alpha[sel] = (a * 255).round().to(torch.uint8)
                bar.update(len(sel))

    rng = None if cfg.wording == "plain" else np.random.default_rng([cfg.seed, 2])
    distance = apparent_distance(cams)
    angles = zip(elevation.tolist(), azimuth.tolist(), distance.tolist(), strict=True)
    captions = []
    for i, camera in enumerate(angles):
        composite = geometry[i]
        colours = tuple(COLOUR_NAMES[c] for c in parts_colour[i, : len(composite.shapes)])
        words = caption_subject(composite, colours, kind=CAPTION_KINDS[kind[i]], rng=rng)
        captions.append(cfg.view_scheme.caption(words, *camera))
    return ShapesDataset(
        images=images.numpy(),
        alpha=alpha.numpy(),
        shape=parts_shape[:, 0].copy(),
        colour=parts_colour[:, 0].copy(),
        caption_kind=kind.numpy(),
        view=view.numpy(),
        elevation=elevation.float().numpy(),
        azimuth=azimuth.float().numpy(),
        distance=cams.c2w[:, :3, 3].norm(dim=-1).float().numpy(),
        fov=torch.rad2deg(cams.fov_y).float().numpy(),
        captions=captions,
        config=cfg,
        layout=layout.copy(),
        part_shape=parts_shape.copy(),
        part_colour=parts_colour.copy(),
        side=side.copy(),
    )


_ARRAYS = ("images", "alpha", "shape", "colour", "caption_kind", "view", "elevation", "azimuth", "distance", "fov")
_PART_ARRAYS = ("layout", "part_shape", "part_colour", "side")
FIRST_FORMAT = "uni3d-shapes-1"
"""Files of single primitives only, without part labels (read with them filled in)."""


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
        layouts=np.array(LAYOUTS),
        **{name: getattr(data, name) for name in (*_ARRAYS, *_PART_ARRAYS)},
    )
    return atomic_write(path, buf.getvalue())


def _single_parts(shape: np.ndarray, colour: np.ndarray) -> dict[str, np.ndarray]:
    """The part labels of a dataset of single primitives (a first-version file)."""
    absent = np.full_like(shape, -1)
    return {
        "layout": np.zeros_like(shape),
        "part_shape": np.stack([shape, absent], 1),
        "part_colour": np.stack([colour, absent], 1),
        "side": np.ones_like(shape),
    }


def load_shapes_dataset(path: str | Path) -> ShapesDataset:
    """Read a file written by :func:`save_shapes_dataset`; a missing or foreign file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no shapes dataset at {path}; make one with: uni3d make-shapes-dataset --out {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "format" not in z.files or str(z["format"]) not in (FORMAT, FIRST_FORMAT):
                raise UsageError(f"{path} is not a {FORMAT} dataset file")
            if tuple(z["shape_names"].tolist()) != SHAPE_NAMES or tuple(z["colour_names"].tolist()) != COLOUR_NAMES:
                raise UsageError(f"{path} uses other shape/colour names than this version; regenerate it")
            if "layouts" in z.files and tuple(z["layouts"].tolist()) != LAYOUTS:
                raise UsageError(f"{path} uses other layout names than this version; regenerate it")
            raw = json.loads(str(z["config"]))
            cfg = ShapesDatasetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
            arrays = {name: z[name] for name in _ARRAYS}
            if str(z["format"]) == FORMAT:
                arrays |= {name: z[name] for name in _PART_ARRAYS}
            else:
                arrays |= _single_parts(arrays["shape"], arrays["colour"])
            captions = z["captions"].tolist()
    except UsageError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        detail = " ".join(str(err).split())[:120]
        raise UsageError(f"{path} is not a readable {FORMAT} dataset file ({type(err).__name__}: {detail})") from err
    return ShapesDataset(captions=captions, config=cfg, **arrays)
