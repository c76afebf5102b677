"""Training curves of distillation runs as PNG: FID (and optionally a reference line) against CPU seconds."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from uni3d.io import atomic_write

Rows = Sequence[dict[str, Any]]


def _points(rows: Rows, x: str, y: str) -> tuple[list[float], list[float]]:
    """``(x, y)`` of the rows that hold a finite ``y`` (evaluation rows), in file order."""
    pairs = [(float(r[x]), float(r[y])) for r in rows if r.get(y) not in (None, "") and r.get(x) not in (None, "")]
    pairs = [(a, b) for a, b in pairs if math.isfinite(b)]
    return [a for a, _ in pairs], [b for _, b in pairs]


def fid_curves_png(
    path: str | Path,
    runs: Sequence[tuple[str, Rows]],
    x: str = "cpu_seconds",
    reference: tuple[str, float] | None = None,
) -> Path:
    """One FID-vs-``x`` line per ``(label, metrics rows)`` on a log-scaled FID axis; ``reference`` is drawn as a
    dashed horizontal line (e.g. the teacher's FID at NFE 35 on the same evaluation noise)."""
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.subplots()
    for label, rows in runs:
        xs, ys = _points(rows, x, "fid")
        if xs:
            ax.plot(xs, ys, marker="o", ms=3, lw=1.2, label=label)
    if reference is not None:
        ax.axhline(reference[1], color="black", ls="--", lw=1, label=reference[0])
    ax.set_yscale("log")
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel("FID (feature net)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return atomic_write(path, buf.getvalue())
