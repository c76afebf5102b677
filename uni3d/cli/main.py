"""``uni3d`` command line: parse -> config -> pipeline. Bad input ends in one line on stderr, exit code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from uni3d import __version__
from uni3d.bench import coverage as bench_coverage
from uni3d.bench import fake_bias as bench_fake_bias
from uni3d.bench import image_runs as bench_image_runs
from uni3d.bench import images as bench_images
from uni3d.bench import scene as bench_scene
from uni3d.bench import sd_step as bench_sd_step
from uni3d.bench import shapes as bench_shapes
from uni3d.bench import teacher_jacobian as bench_teacher_jacobian
from uni3d.bench import toy as bench_toy
from uni3d.cli import app as app_cli
from uni3d.cli import check as check_cli
from uni3d.cli import embedded_prior as embedded_shapes_dataset_cli
from uni3d.cli import images as images_cli
from uni3d.cli import reconstruct as reconstruct_cli
from uni3d.cli import shapes_dataset as shapes_dataset_cli
from uni3d.cli import text_to_3d as text_to_3d_cli
from uni3d.cli import toy as toy_cli
from uni3d.errors import UsageError


def build_parser() -> argparse.ArgumentParser:
    """The full ``uni3d`` parser; each subcommand sets ``func(args) -> exit code``."""
    parser = argparse.ArgumentParser(
        prog="uni3d",
        description="Score distillation (Uni-Instruct and its special cases) for 3D and one-step generators.",
    )
    parser.add_argument("--version", action="version", version=f"uni3d {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check_cli.add_commands(sub)
    text_to_3d_cli.add_commands(sub)
    toy_cli.add_commands(sub)
    reconstruct_cli.add_commands(sub)
    shapes_dataset_cli.add_commands(sub)
    embedded_shapes_dataset_cli.add_commands(sub)
    images_cli.add_commands(sub)
    app_cli.add_commands(sub)
    bench = sub.add_parser("bench", help="benchmarks that write docs/benchmarks.md")
    bench_sub = bench.add_subparsers(dest="what", required=True, metavar="WHAT")
    bench_toy.add_commands(bench_sub)
    bench_scene.add_commands(bench_sub)
    bench_images.add_commands(bench_sub)
    bench_image_runs.add_commands(bench_sub)
    bench_shapes.add_commands(bench_sub)
    bench_coverage.add_commands(bench_sub)
    bench_fake_bias.add_commands(bench_sub)
    bench_teacher_jacobian.add_commands(bench_sub)
    bench_sd_step.add_commands(bench_sub)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``uni3d`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as err:
        print(f"uni3d: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("uni3d: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
