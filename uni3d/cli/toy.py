"""``uni3d toy``: distill the 2-D ring teacher with one preset and report the metrics."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from uni3d.cli.commands import COMMANDS
from uni3d.cli.flags import Flag, add_flags, given, names
from uni3d.config import read_config_file
from uni3d.losses import PRESET_NAMES
from uni3d.tasks.toy.config import ToyConfig
from uni3d.tasks.toy.train import ToyResult, run_toy

_DEFAULTS = ToyConfig()
_FLAGS: tuple[Flag, ...] = (
    ("preset", str, f"loss preset; one of {', '.join(PRESET_NAMES)}"),
    ("steps", int, "training steps"),
    ("seed", int, "training seed"),
    ("batch_size", int, "batch size"),
    ("ratio_clamp", float, "clamp on |log r| of the ratio head"),
    ("gen_sigma_min", float, "generator-loss noise levels start here (w(t) = 0 below)"),
)
"""Config fields with a command-line flag: ``(field, type, help)``; the default comes from :class:`ToyConfig`."""


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``toy`` on the top-level ``uni3d`` subparsers."""
    p = subparsers.add_parser(
        "toy",
        help=COMMANDS["toy"].help,
        description="Distill the analytic 8-Gaussian ring teacher into a one-step MLP generator; report the "
        "energy distance to the target (with its finite-sample floor), modes covered and wall time; save a "
        "scatter plot.",
    )
    add_flags(p, _FLAGS, defaults=_DEFAULTS)
    p.add_argument("--config", type=Path, default=None, help="YAML/JSON settings (e.g. a saved config.json); flags win")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run folder for config.json, metrics.json, samples.png (default runs/toy/<preset>)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where the fitted teacher network is cached (default $UNI3D_CACHE_DIR or ~/.cache/uni3d)",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=_toy)


def config_from_args(args: argparse.Namespace) -> ToyConfig:
    """Defaults, then the ``--config`` file, then the flags given on the command line."""
    values: dict[str, Any] = read_config_file(args.config, "toy") if args.config else {}
    values.update(given(args, names(_FLAGS)))
    return ToyConfig.from_dict(values)


def _summary(result: ToyResult, out: Path) -> str:
    m, c = result.metrics, result.counters
    ed = f"{m.energy_distance:.5f}" if m.energy_distance is not None else f"undefined ({m.nonfinite} non-finite)"
    fit = "" if result.fit_cached else f" (+ {result.fit_seconds:.1f} s fitting the teacher network, now cached)"
    return "\n".join(
        [
            f"preset           {result.preset}",
            f"energy distance  {ed}  (floor {m.floor:.5f}: a target sample of the same size)",
            f"modes covered    {m.modes_covered}/{m.n_modes}  ({100 * m.near_share:.1f}% of samples near a mode)",
            f"wall time        {result.train_seconds:.1f} s training ({result.train_cpu_seconds:.1f} s CPU){fit}",
            f"ratio head       {c.ratio_clamped} clamped, {c.ratio_nonfinite} non-finite of {c.ratio_evaluations} "
            f"evaluations; {c.skipped_generator_steps} generator steps skipped (non-finite loss)",
            f"outputs          {out}/ (config.json, metrics.json, samples.png)",
        ]
    )


def _toy(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    out = args.out or Path("runs") / "toy" / cfg.preset
    result = run_toy(cfg, out=out, cache_dir=args.cache_dir, progress=not args.json)
    print(json.dumps({**result.as_dict(), "out": str(out)}, indent=2) if args.json else _summary(result, out))
    return 0
