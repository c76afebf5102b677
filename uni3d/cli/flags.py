"""Settings as command-line flags: one ``--kebab-case`` option per config field, read back as overrides.

Every flag defaults to ``None``, so only the flags a user gives override the defaults and a ``--config`` file.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from typing import Any

Flag = tuple[str, type, str]
"""``(config field, type, help)``."""


def add_flags(
    parser: argparse.ArgumentParser,
    flags: Sequence[Flag],
    *,
    defaults: object | None = None,
    aliases: dict[str, Sequence[str]] | None = None,
) -> None:
    """Add ``--field-name`` for each flag; ``defaults`` (a config instance) puts its value in the help text."""
    for name, kind, text in flags:
        options = ["--" + name.replace("_", "-"), *(aliases or {}).get(name, ())]
        shown = text if defaults is None else f"{text} (default {getattr(defaults, name)})"
        parser.add_argument(*options, dest=name, type=kind, default=None, metavar=name.upper(), help=shown)


def given(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The settings among ``names`` that were given on the command line."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def names(flags: Sequence[Flag]) -> tuple[str, ...]:
    return tuple(name for name, _, _ in flags)
