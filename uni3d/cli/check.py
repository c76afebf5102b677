"""``uni3d check divergences``: METHOD.md section 6 for every divergence and both forms (exit code 1 on a miss);
``uni3d check gpu``: the CUDA acceptance run (:mod:`uni3d.checks.gpu`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from uni3d.checks.divergences import format_table, run_check
from uni3d.cli.commands import COMMANDS


def _check_divergences(args: argparse.Namespace) -> int:
    rows = run_check(rtol=args.rtol)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        print(format_table(rows))
    return 0 if all(r.passed for r in rows) else 1


def _check_gpu(args: argparse.Namespace) -> int:
    from uni3d.checks.gpu import run_gpu_check, steps

    rows = run_gpu_check(steps(install=not args.no_install, docs=args.docs), args.docs)
    return 0 if all(r["rc"] == 0 for r in rows if r["required"]) else 1


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``check`` and its ``divergences`` subcommand."""
    check = sub.add_parser("check", help=COMMANDS["check"].help)
    check_sub = check.add_subparsers(dest="what", required=True, metavar="WHAT")
    div = check_sub.add_parser("divergences", help="loss gradients vs exact gradients on 1-D Gaussians")
    div.add_argument("--json", action="store_true", help="print the rows as JSON")
    div.add_argument("--rtol", type=float, default=1e-8, help="relative tolerance (default 1e-8)")
    div.set_defaults(func=_check_divergences)
    gpu = check_sub.add_parser("gpu", help="CUDA acceptance: extras, parity tests, SD step and renderer benchmarks")
    gpu.add_argument("--no-install", action="store_true", help="skip installing nerfacc and tinycudann")
    gpu.add_argument("--docs", type=Path, default=Path("docs"), help="docs folder to write into (default docs)")
    gpu.set_defaults(func=_check_gpu)
