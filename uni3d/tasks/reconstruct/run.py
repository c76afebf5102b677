"""``reconstruct``: render a real mesh from many views, fit a field to the images, export it, measure it.

Outputs in the run folder: ``model.glb`` (textured), ``model_vertex_color.glb``, ``model.obj`` + ``.mtl`` +
texture PNG, ``turntable.mp4`` (or ``.gif``), ``contact_sheet.png``, ``config.json`` and ``metrics.json``.
Meshes are in scene units (the source centred and scaled to a largest half-extent of 0.7, ``+y`` up).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from uni3d.errors import UsageError
from uni3d.export.asset import ExportSettings, export_asset
from uni3d.io import save_json
from uni3d.scene.background import SolidBackground
from uni3d.tasks.reconstruct.fit import FitConfig, fit_field
from uni3d.tasks.reconstruct.meshes import load_mesh
from uni3d.tasks.reconstruct.metrics import chamfer, psnr
from uni3d.tasks.reconstruct.views import camera_distance, render_views


@dataclass(frozen=True)
class ReconstructConfig:
    """What to reconstruct and how to export it; ``fit`` holds the optimisation settings."""

    mesh: str
    views: int = 64
    holdout_views: int = 8
    image_size: int = 128
    fov_deg: float = 40.0
    mc_resolution: int = 128
    max_faces: int = 10000
    texture_size: int = 1024
    turntable_frames: int = 48
    fill_unseen: bool = True
    """Fill what no axis-aligned view sees before marching cubes (``--no-fill-unseen`` turns it off: better for a
    deep opening such as a cup's, which one floater can hide from the only axis that looks in; worse for an
    annulus; docs/reconstruct.md)."""
    fit: FitConfig = field(default_factory=FitConfig)

    def __post_init__(self) -> None:
        if not 1 <= self.views <= 1024:
            raise UsageError(f"--views must be 1-1024, got {self.views}")
        if not 1 <= self.holdout_views <= 256:
            raise UsageError(f"held-out views must be 1-256, got {self.holdout_views}")
        if not 64 <= self.texture_size <= 8192:
            raise UsageError(f"texture size must be 64-8192, got {self.texture_size}")
        if not 10.0 <= self.fov_deg <= 120.0:
            raise UsageError(f"field of view must be 10-120 degrees, got {self.fov_deg}")


def reconstruct(cfg: ReconstructConfig, out: Path, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run the whole proof; returns (and saves as ``metrics.json``) the report."""
    if not 16 <= cfg.mc_resolution <= 512:  # fail before the fit, not after it
        raise UsageError(f"marching-cubes resolution must be 16-512, got {cfg.mc_resolution}")
    torch.manual_seed(cfg.fit.seed)
    source = load_mesh(cfg.mesh)
    save_json(out / "config.json", dataclasses.asdict(cfg))
    t0 = time.perf_counter()
    train = render_views(source, cfg.views, cfg.image_size, cfg.fov_deg)
    test = render_views(source, cfg.holdout_views, cfg.image_size, cfg.fov_deg, offset=0.25)
    log(f"rendered {cfg.views} training + {cfg.holdout_views} held-out views in {time.perf_counter() - t0:.1f} s")
    result = fit_field(train, cfg.fit, progress=lambda s, loss: log(f"step {s:5d}  loss {loss:.5f}"))
    renderer = result.renderer
    renderer.background = SolidBackground((1.0, 1.0, 1.0))
    first = result.losses[0] if result.losses else float("nan")
    last = sum(result.losses[-20:]) / max(1, len(result.losses[-20:]))
    log(f"fit {result.steps} steps in {result.seconds:.0f} s; rendering {cfg.holdout_views} held-out views")
    held_out = psnr(renderer.render_images(test.cameras)["rgb"], test.on_background(1.0))
    t1 = time.perf_counter()
    log("exporting (marching cubes, texture bake, turntable)")
    distance = camera_distance(source, cfg.fov_deg)
    settings = ExportSettings(
        mc_resolution=cfg.mc_resolution,
        max_faces=cfg.max_faces,
        texture_size=cfg.texture_size,
        turntable_frames=cfg.turntable_frames,
        turntable_size=cfg.image_size,
    )
    asset = export_asset(renderer, out, settings, distance=distance, fill_unseen=cfg.fill_unseen)
    mesh, level, video = asset.mesh, asset.iso_level, asset.video
    cd, to_src, to_pred = chamfer(mesh, source.mesh)
    report = {
        "mesh": str(cfg.mesh),
        "source_faces": len(source.mesh.faces),
        "views": cfg.views,
        "holdout_views": cfg.holdout_views,
        "image_size": cfg.image_size,
        "backend": renderer.backend,
        "steps": result.steps,
        "fit_seconds": round(result.seconds, 2),
        "export_seconds": round(time.perf_counter() - t1, 2),
        "loss_first": first,
        "loss_last": last,
        "psnr_holdout_db": round(held_out, 3),
        "chamfer_over_diagonal": cd,
        "chamfer_pred_to_source": to_src,
        "chamfer_source_to_pred": to_pred,
        "iso_level": level,
        "mesh_vertices": len(mesh.vertices),
        "mesh_faces": len(mesh.faces),
        "video": video.name,
    }
    save_json(out / "metrics.json", report)
    return report
