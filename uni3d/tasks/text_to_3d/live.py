"""What a running generation shows while it trains: a cheap mesh of the current field and views of it at a
viewer's size, at preview steps (``preview_every``) as long as they cost at most :data:`LIVE_SHARE` of the
training time so far (so the app's frequent previews get one now and then; costs in docs/app.md).

The field's own previews are renders at the training side (tiny with the embedded prior), too small to judge and
too dear to volume-render at a viewer's size on a CPU. So a preview step also takes a low-resolution marching-cubes
mesh of every particle (:data:`LIVE_RESOLUTION`, no unseen-voxel filling, at most :data:`LIVE_FACES` faces, the
field's albedo as vertex colours) and rasterizes it from four orbit views at :data:`LIVE_SIZE` px
(:func:`uni3d.export.video.turntable_frames`): ``previews/live_step_N.png`` (one row per particle that has a
surface) and particle 0's mesh as ``previews/live_step_N.glb`` (the older ones deleted), which the app puts in its
3D viewer. A field without a surface yet (early steps) gives no live files.
"""

from __future__ import annotations

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
    if glb is not None:
        for old in folder.glob("live_step_*.glb"):
            if old != glb:
                old.unlink(missing_ok=True)
    if not rows:
        return None
    frames = np.concatenate(rows)
    return contact_sheet(frames, folder / f"live_step_{step:06d}.png", columns=LIVE_VIEWS, max_tiles=len(frames))
