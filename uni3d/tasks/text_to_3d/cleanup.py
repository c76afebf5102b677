"""``uni3d clean``: the checkpoints of finished runs, which only a run that trains on needs (its assets stay)."""

from __future__ import annotations

import json
from pathlib import Path

from uni3d.checkpoints import CHECKPOINT, previous


def finished_checkpoints(root: Path) -> list[Path]:
    """The checkpoint files of every finished run at or below ``root`` (a folder whose ``metrics.json`` says
    ``"status": "done"``); a cancelled or unfinished run keeps its checkpoint, since it resumes from it."""
    found: list[Path] = []
    for metrics in sorted(Path(root).rglob("metrics.json")):
        try:
            status = json.loads(metrics.read_text()).get("status")
        except (OSError, ValueError, AttributeError):
            continue
        if status == "done":
            checkpoint = metrics.parent / CHECKPOINT
            found += [p for p in (checkpoint, previous(checkpoint)) if p.is_file()]
    return found
