"""Checkpoints that survive damage: the last two are kept, and one that cannot be read is moved aside, not fatal.

A run folder holds ``checkpoint.pt`` and the one before it, ``checkpoint.prev.pt``. A checkpoint cut short (a full
disk, a copy interrupted) or refused by the safe unpickler (``weights_only``: a file that carries code) would
otherwise block its run for good: every resume would fail on it. :func:`load_checkpoint` moves such a file aside
(``*.damaged``), says so in one line, and falls back to the previous one, or to a fresh start.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from uni3d.io import atomic_write

CHECKPOINT = "checkpoint.pt"
"""A run folder's checkpoint."""


def previous(path: Path) -> Path:
    """Where the checkpoint before ``path`` is kept: ``checkpoint.pt`` -> ``checkpoint.prev.pt``."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically, keeping the checkpoint it replaces as :func:`previous`."""
    buf = io.BytesIO()
    torch.save(state, buf)
    if path.is_file():
        os.replace(path, previous(path))  # a crash between the two replaces leaves the previous one to resume from
    atomic_write(path, buf.getvalue())


def _move_aside(path: Path) -> Path:
    aside = path.with_name(path.name + ".damaged")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.damaged-{n}")
    os.replace(path, aside)
    return aside


def load_checkpoint(
    path: Path, *, map_location: torch.device | str, required: str, log: Callable[[str], None]
) -> dict[str, Any] | None:
    """The newest readable checkpoint among ``path`` and :func:`previous` (a dict holding the key ``required``), or
    ``None`` when there is none; each unreadable one is moved aside with a one-line ``log`` note."""
    for candidate in (path, previous(path)):
        if not candidate.is_file():
            continue
        try:
            state = torch.load(candidate, map_location=map_location, weights_only=True)
            problem = None if isinstance(state, dict) and required in state else f"no {required!r} entry"
        except Exception as err:  # whatever makes a file unreadable, the run must not depend on it
            problem = f"{type(err).__name__}: {' '.join(str(err).split())[:120]}"
        if problem is None:
            return state
        aside = _move_aside(candidate)
        log(f"note: {candidate} cannot be read ({problem}); moved to {aside.name}, resuming from an earlier state")
    return None
