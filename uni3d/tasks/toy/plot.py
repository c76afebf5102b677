"""Scatter plots of toy samples over the ring's mode circles (PNG, written atomically)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from torch import Tensor

from uni3d.io import atomic_write
from uni3d.tasks.toy.metrics import NEAR_STDS
from uni3d.tasks.toy.teacher import RingTeacher

MAX_POINTS = 3000
"""Points drawn per panel (the first ones: samples are i.i.d.)."""


def _panel(ax: Axes, samples: Tensor, teacher: RingTeacher, title: str) -> None:
    lim = 1.6 * teacher.radius
    pts = samples[:MAX_POINTS].detach().float().nan_to_num(nan=2 * lim, posinf=2 * lim, neginf=-2 * lim)
    for mx, my in teacher.means().tolist():
        ax.add_patch(Circle((mx, my), NEAR_STDS * teacher.std, fill=False, color="tab:red", lw=0.8))
    ax.scatter(pts[:, 0].numpy(), pts[:, 1].numpy(), s=1.5, alpha=0.35, color="tab:blue", linewidths=0)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xticks=[], yticks=[])
    ax.set_title(title, fontsize=8)


def scatter_grid_png(path: str | Path, panels: Sequence[tuple[str, Tensor]], teacher: RingTeacher) -> Path:
    """One scatter panel per ``(title, samples [N, 2])``; red circles mark the "near a mode" radius."""
    cols = min(len(panels), 6)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(2.2 * cols, 2.3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (title, samples) in zip(axes.flat, panels, strict=False):
        _panel(ax, samples, teacher, title)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return atomic_write(path, buf.getvalue())
