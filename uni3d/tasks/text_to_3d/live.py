"""What a running generation shows while it trains (the app asks for it: ``generate(live_previews=True)``): a cheap
mesh of the current field and views of it at a viewer's size, at preview steps (``preview_every``) as long as they
cost at most :data:`LIVE_SHARE` of this session's training time (so the app's frequent previews get one now and
then; costs in docs/app.md). Their time is left out of the run's training seconds, and a failure turns them off
with one note instead of ending the run.

The field's own previews are renders at the training side (tiny with the embedded prior), too small to judge and
too dear to volume-render at a viewer's size on a CPU. So a preview step also takes a low-resolution marching-cubes
mesh of every particle (:data:`LIVE_RESOLUTION`, no unseen-voxel filling, at most :data:`LIVE_FACES` faces, the
field's albedo as vertex colours) and rasterizes it from four orbit views at :data:`LIVE_SIZE` px
(:func:`uni3d.export.video.turntable_frames`): ``previews/live_step_N.png`` (one row per particle that has a
surface) and particle 0's mesh as ``previews/live_step_N.glb`` (the older ones deleted), which the app puts in its
3D viewer. A field without a surface yet (early steps) gives no live files.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from uni3d.errors import UsageError
from uni3d.export.bake import vertex_colored
from uni3d.export.mesh import extract_mesh
from uni3d.export.video import contact_sheet, turntable_frames
from uni3d.export.writers import write_glb

if TYPE_CHECKING:
    from uni3d.tasks.text_to_3d.trainer import TextTo3D

LIVE_RESOLUTION = 48
LIVE_FACES = 4000
LIVE_SIZE = 256
LIVE_VIEWS = 4
LIVE_SHARE = 0.25
"""Largest share of the training time the live previews may take."""


def live_preview(trainer: TextTo3D, folder: Path, step: int) -> Path | None:
    """Write the live mesh and views of ``step`` into ``folder`` (module docstring); the PNG, or ``None`` when no
    particle has a surface yet."""
    cfg = trainer.cfg
    rows, glb = [], None
    for k, renderer in enumerate(trainer.renderers):
        if renderer.backend == "torch" and next(renderer.buffers()).device.type != "cpu":
            renderer = copy.deepcopy(renderer).cpu()  # the mesh code builds its grids on the CPU, as the export
        try:
            mesh, _ = extract_mesh(
                renderer, LIVE_RESOLUTION, threshold=cfg.export.iso_level, max_faces=LIVE_FACES, fill_unseen=False
            )
        except UsageError:  # no surface yet at the iso-level
            continue
        colored = vertex_colored(mesh, renderer.field)
        distance = sum(cfg.distance) / 2
        rows.append(turntable_frames(colored, LIVE_VIEWS, LIVE_SIZE, distance=distance))
        if k == 0:
            glb = write_glb(colored, folder / f"live_step_{step:06d}.glb")
    if glb is not None:  # keep the newest two: a page may be handing the previous one to its viewer right now
        for old in sorted(folder.glob("live_step_*.glb"))[:-2]:
            old.unlink(missing_ok=True)
    if not rows:
        return None
    frames = np.concatenate(rows)
    return contact_sheet(frames, folder / f"live_step_{step:06d}.png", columns=LIVE_VIEWS, max_tiles=len(frames))


class LivePreviews:
    """:func:`live_preview` at the preview steps while its time stays within :data:`LIVE_SHARE` of the training
    time of this session (live time not counted as training); the first failure turns it off with one note."""

    def __init__(self, folder: Path, log: Callable[[str], None]) -> None:
        self.folder, self.log = folder, log
        self.spent = 0.0
        self.enabled = True
        self._start = time.perf_counter()

    def maybe(self, trainer: TextTo3D, step: int) -> None:
        """Take the live preview of ``step`` if the budget allows."""
        training = time.perf_counter() - self._start - self.spent
        if not self.enabled or self.spent > LIVE_SHARE * training:
            return
        t0 = time.perf_counter()
        try:
            live_preview(trainer, self.folder, step)
        except Exception as err:  # a preview must never end a run
            self.enabled = False
            first = (str(err).strip().splitlines() or [""])[0][:200]
            self.log(f"live previews turned off after an error: {type(err).__name__}: {first}")
        self.spent += time.perf_counter() - t0
