"""``uni3d make-shapes-dataset``: render the embedded prior's training set to one ``.npz`` file."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from uni3d.cli.commands import COMMANDS
from uni3d.models.views import VIEW_SCHEMES
from uni3d.tasks.embedded_prior.dataset import (
    CAPTION_KINDS,
    ShapesDatasetConfig,
    make_shapes_dataset,
    save_shapes_dataset,
)

_DEFAULTS = ShapesDatasetConfig()


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``make-shapes-dataset`` on the top-level ``uni3d`` subparsers."""
    p = subparsers.add_parser(
        "make-shapes-dataset",
        help=COMMANDS["make-shapes-dataset"].help,
        description="Render N views of primitives (sphere, cube, cylinder, cone, torus, pyramid) in 10 named "
        "colours with the scene's camera sampler, caption them ('a red cube, side view', some without the colour "
        "or the shape), and write images, masks, captions and ground-truth labels to one .npz file.",
    )
    p.add_argument("--n", type=int, default=_DEFAULTS.n, help=f"number of images (default {_DEFAULTS.n})")
    p.add_argument("--size", type=int, default=_DEFAULTS.size, help=f"image side in pixels (default {_DEFAULTS.size})")
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed, help=f"seed (default {_DEFAULTS.seed})")
    p.add_argument(
        "--supersample",
        type=int,
        default=_DEFAULTS.supersample,
        help=f"rays per pixel side, for anti-aliasing (default {_DEFAULTS.supersample})",
    )
    p.add_argument(
        "--views",
        choices=sorted(VIEW_SCHEMES),
        default=_DEFAULTS.views,
        help="how captions name the camera: coarse ('side view', DreamFusion's words) or angles ('side view, azimuth "
        f"90, elevation 15, distance 3') (default {_DEFAULTS.views})",
    )
    p.add_argument("--out", type=Path, required=True, help="output file (.npz)")
    p.set_defaults(func=_make_shapes_dataset)


def _make_shapes_dataset(args: argparse.Namespace) -> int:
    cfg = ShapesDatasetConfig(n=args.n, size=args.size, seed=args.seed, supersample=args.supersample, views=args.views)
    start = time.perf_counter()
    data = make_shapes_dataset(cfg, progress=True)
    path = save_shapes_dataset(data, args.out)
    kinds = Counter(CAPTION_KINDS[k] for k in data.caption_kind.tolist())
    mix = ", ".join(f"{kinds[k]} {k}" for k in CAPTION_KINDS)
    seconds = time.perf_counter() - start
    print(f"wrote {path}: {len(data)} images {cfg.size}x{cfg.size} ({mix} captions) in {seconds:.1f} s")
    return 0
