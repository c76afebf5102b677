"""``uni3d app``: serve the Gradio web app (gradio is imported only when the command runs)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from uni3d.cli.commands import COMMANDS
from uni3d.errors import UsageError

DEFAULT_OUT = Path("runs/app")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``app`` on the top-level ``uni3d`` subparsers."""
    p = subparsers.add_parser(
        "app",
        help=COMMANDS["app"].help,
        description="Serve the text-to-3D web app. One job runs at a time (others wait in a queue and see their "
        "place); Cancel stops after the current step and keeps the partial result.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder for the runs (default {DEFAULT_OUT})")
    p.add_argument(
        "--priors",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="also offer the Stable Diffusion folders in DIR (repeatable)",
    )
    p.set_defaults(func=run_app)


def run_app(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be 1-65535, got {args.port}")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        from uni3d.app.priors import find_priors
        from uni3d.app.ui import launch
    except ImportError as err:
        raise UsageError(f"the web app needs gradio ({err}); install it with: pip install 'gradio>=6'") from None
    launch(args.out, host=args.host, port=args.port, priors=find_priors(args.priors))
    return 0
