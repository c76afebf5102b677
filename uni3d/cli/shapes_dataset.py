"""``uni3d make-shapes-dataset``: render the embedded prior's training set to one ``.npz`` file."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from uni3d.cli.commands import COMMANDS
from uni3d.models.views import VIEW_SCHEMES
from uni3d.tasks.embedded_prior.composites import LAYOUTS
from uni3d.tasks.embedded_prior.dataset import (
    CAPTION_KINDS,
    ShapesDatasetConfig,
    make_shapes_dataset,
    save_shapes_dataset,
)
from uni3d.tasks.embedded_prior.phrasing import WORDINGS

_DEFAULTS = ShapesDatasetConfig()


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``make-shapes-dataset`` on the top-level ``uni3d`` subparsers."""
    p = subparsers.add_parser(
        "make-shapes-dataset",
        help=COMMANDS["make-shapes-dataset"].help,
        description="Render N views of primitives (sphere, cube, cylinder, cone, torus, pyramid) in 10 named "
        "colours, and optionally of composites (a body with a nose, handle or knob; two parts stacked or side by "
        "side), with the scene's camera sampler, caption them ('a red cube, side view', some without the colour "
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
    p.add_argument(
        "--wording",
        choices=WORDINGS,
        default=_DEFAULTS.wording,
        help="caption phrasing: plain ('a red cube', the first prior's) or varied (synonyms, word orders, articles; "
        f"some phrasings held out for scoring) (default {_DEFAULTS.wording})",
    )
    for layout, example in (
        ("front", "a blue sphere with a red cone nose"),
        ("stack", "a red cube on top of a blue sphere"),
        ("beside", "a green cone beside a yellow torus"),
    ):
        p.add_argument(
            f"--p-{layout}",
            type=float,
            default=getattr(_DEFAULTS, f"p_{layout}"),
            help=f"share of composites like '{example}' (default {getattr(_DEFAULTS, f'p_{layout}')})",
        )
    p.add_argument("--out", type=Path, required=True, help="output file (.npz)")
    p.set_defaults(func=_make_shapes_dataset)


def _make_shapes_dataset(args: argparse.Namespace) -> int:
    cfg = ShapesDatasetConfig(
        n=args.n,
        size=args.size,
        seed=args.seed,
        supersample=args.supersample,
        views=args.views,
        wording=args.wording,
        p_front=args.p_front,
        p_stack=args.p_stack,
        p_beside=args.p_beside,
    )
    start = time.perf_counter()
    data = make_shapes_dataset(cfg, progress=True)
    path = save_shapes_dataset(data, args.out)
    kinds = Counter(CAPTION_KINDS[k] for k in data.caption_kind.tolist())
    mix = ", ".join(f"{kinds[k]} {k}" for k in CAPTION_KINDS)
    layouts = Counter(LAYOUTS[k] for k in data.layout.tolist())
    parts = ", ".join(f"{layouts[k]} {k}" for k in LAYOUTS)
    seconds = time.perf_counter() - start
    print(f"wrote {path}: {len(data)} images {cfg.size}x{cfg.size} ({parts}; {mix} captions) in {seconds:.1f} s")
    return 0
