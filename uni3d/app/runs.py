"""Run folders as the page shows them: a finished (or cancelled) run's files, the OBJ zip, the gallery listing."""

from __future__ import annotations

import contextlib
import io
import json
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uni3d.io import atomic_write
from uni3d.tasks.text_to_3d.config import EMBEDDED_PRIOR


@dataclass(frozen=True)
class RunResult:
    """The files of one run folder that the page shows (``None``: not written). A run of several particles shows
    the first particle's asset and video, the preview of all of them side by side, and offers every particle's
    files for download."""

    folder: Path
    metrics: dict[str, Any]
    glb: Path | None
    video: Path | None
    preview: Path | None
    obj_zip: Path | None
    more: tuple[Path, ...] = ()
    """The other particles' GLBs and OBJ zips."""
    config: dict[str, Any] = field(default_factory=dict)
    """The run's ``config.json`` (empty when it cannot be read)."""

    @property
    def downloads(self) -> list[str]:
        """The files offered for download: the textured GLB and the OBJ zip (of every particle)."""
        return [str(p) for p in (self.glb, self.obj_zip, *self.more) if p is not None]

    def caption(self) -> str:
        """One line that tells runs of one prompt apart: prompt, preset, seed, steps (and status), particles, the
        prior when it is not the embedded one, and when it finished."""
        m, c = self.metrics, self.config
        steps = f"{m.get('steps')} steps" + (" (cancelled)" if m.get("status") == "cancelled" else "")
        parts = [m.get("prompt", self.folder.name), m.get("preset", "?")]
        parts += [f"seed {c['seed']}"] if "seed" in c else []
        parts.append(steps)
        parts += [f"{len(m['particles'])} particles"] if m.get("particles") else []
        prior = m.get("prior")
        parts += [Path(prior).name] if prior and prior != EMBEDDED_PRIOR else []
        with contextlib.suppress(OSError):
            parts.append(
                time.strftime("%Y-%m-%d %H:%M", time.localtime((self.folder / "metrics.json").stat().st_mtime))
            )
        return " · ".join(str(p) for p in parts)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_metrics(folder: Path) -> dict[str, Any] | None:
    """``metrics.json`` of ``folder`` (written last, so its presence means the export is complete), else ``None``."""
    return _read_json(Path(folder) / "metrics.json")


def obj_zip(folder: Path) -> Path | None:
    """``model_obj.zip``: ``model.obj``, its ``.mtl`` and the textures the ``.mtl`` names (made once)."""
    folder = Path(folder)
    obj, mtl, target = folder / "model.obj", folder / "model.mtl", folder / "model_obj.zip"
    if not obj.is_file():
        return None
    if target.is_file() and target.stat().st_mtime >= obj.stat().st_mtime:
        return target
    names = [obj.name]
    if mtl.is_file():
        names.append(mtl.name)
        for line in mtl.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].lower().startswith("map_") and (folder / parts[-1]).is_file():
                names.append(parts[-1])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in dict.fromkeys(names):
            zf.write(folder / name, name)
    return atomic_write(target, buf.getvalue())


def _file(folder: Path, *names: str) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def run_result(folder: Path, make_zip: bool = True) -> RunResult | None:
    """The result of a run folder with ``metrics.json``, else ``None`` (``make_zip``: write the OBJ zip if missing)."""
    folder = Path(folder)
    metrics = read_metrics(folder)
    if metrics is None:
        return None
    assets = [folder / f"particle-{p['particle']}" for p in metrics.get("particles") or []] or [folder]

    def zipped(asset: Path) -> Path | None:
        return obj_zip(asset) if make_zip else _file(asset, "model_obj.zip")

    more = [f for asset in assets[1:] for f in (_file(asset, "model.glb"), zipped(asset)) if f is not None]
    return RunResult(
        folder=folder,
        metrics=metrics,
        glb=_file(assets[0], "model.glb"),
        video=_file(assets[0], "turntable.mp4", "turntable.gif"),
        preview=_file(folder, "preview.png", "contact_sheet.png"),
        obj_zip=zipped(assets[0]),
        more=tuple(more),
        config=_read_json(folder / "config.json") or {},
    )


def latest_preview(folder: Path) -> Path | None:
    """The newest preview of a running job: its live-mesh views (``previews/live_step_*.png``, at the viewer's size)
    when they are of the newest preview step, else the field's ``previews/step_*.png``; ``None`` before the first."""
    shots = sorted(
        (Path(folder) / "previews").glob("*step_*.png"),
        key=lambda p: (p.stem.rsplit("_", 1)[-1], p.name.startswith("live_")),
    )
    return shots[-1] if shots else None


def latest_live_mesh(folder: Path) -> Path | None:
    """The newest live mesh (``previews/live_step_*.glb``) of a running job, else ``None``."""
    meshes = sorted((Path(folder) / "previews").glob("live_step_*.glb"))
    return meshes[-1] if meshes else None


def list_runs(out: Path, limit: int = 48) -> list[RunResult]:
    """Finished and cancelled runs under ``out``, newest first (by ``metrics.json`` time), at most ``limit``."""
    out = Path(out)
    if not out.is_dir():
        return []
    folders = [p for p in out.iterdir() if (p / "metrics.json").is_file()]
    folders.sort(key=lambda p: (p / "metrics.json").stat().st_mtime, reverse=True)
    results = (run_result(p, make_zip=False) for p in folders[:limit])
    return [r for r in results if r is not None and r.preview is not None]
