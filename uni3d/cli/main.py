"""``uni3d`` command line: parse -> config -> pipeline. Bad input ends in one line on stderr, exit code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from uni3d import __version__
from uni3d.cli.commands import BENCHMARKS, COMMANDS, chosen, register
from uni3d.errors import UsageError


class _Parser(argparse.ArgumentParser):
    """argparse's own usage errors as one line like every other error (the usage itself is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("uni3d").strip()
        self.exit(2, f"uni3d: error: {where + ': ' if where else ''}{message} (see {self.prog} --help)\n")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``uni3d`` parser; each subcommand sets ``func(args) -> exit code``. Given the command line ``argv``, only
    the module of the command it names is imported (``uni3d --help`` imports none); without it, every command is
    built."""
    lazy = argv is not None
    words = list(argv or [])
    parser = _Parser(
        prog="uni3d",
        description="Score distillation (Uni-Instruct and its special cases) for 3D and one-step generators.",
    )
    parser.add_argument("--version", action="version", version=f"uni3d {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(sub, COMMANDS, chosen(words), lazy=lazy)
    bench = sub.add_parser("bench", help="benchmarks that write docs/benchmarks.md")
    bench_sub = bench.add_subparsers(dest="what", required=True, metavar="WHAT")
    register(bench_sub, BENCHMARKS, chosen(words, 1) if chosen(words) == "bench" else None, lazy=lazy)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``uni3d`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(argv).parse_args(argv)
    except SystemExit as done:  # --help, --version, or argparse's one-line usage error (printed already)
        return done.code if isinstance(done.code, int) else 0
    try:
        return int(args.func(args) or 0)
    except UsageError as err:
        print(f"uni3d: error: {err}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as err:
        if not _out_of_memory(err):
            raise
        print(
            f"uni3d: error: out of memory ({_first_line(err)}); use a smaller batch, size or particle count",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("uni3d: interrupted", file=sys.stderr)
        return 130


def _first_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:160] or type(err).__name__


def _out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation failure (Python's, the CPU allocator's or CUDA's), which a user meets by
    asking for more than the machine holds (``--batch-size 100000000``): their fix is a smaller setting."""
    text = str(err)
    return isinstance(err, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()


if __name__ == "__main__":
    sys.exit(main())
