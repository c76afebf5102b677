"""Plain-HTML status lines for the page: the progress bar with step and ETA, errors, finished-run summaries."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from PIL import Image

from uni3d.app.jobs import JobState

_LABELS = {
    "loading": "Loading the prior…",
    "training": "Training",
    "exporting": "Exporting the asset (marching cubes, texture bake, turntable)…",
    "done": "Done",
    "cancelled": "Cancelled",
    "failed": "Failed",
}


def duration(seconds: float | None) -> str:
    """``75.2`` -> ``"1 min 15 s"``; ``None`` -> ``"?"``."""
    if seconds is None:
        return "?"
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def enlarged(path: Path | None, width: int = 512) -> Image.Image | None:
    """The preview at ``path`` scaled up by a whole factor (nearest pixel) to at least ``width`` px wide, so the
    page shows the 32 px renders of the embedded prior at a readable size; ``None`` stays ``None``."""
    if path is None:
        return None
    with Image.open(path) as image:
        factor = max(1, -(-width // image.width))
        return image.convert("RGB").resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def thumbnail(path: Path, size: int = 192) -> Image.Image:
    """The first view of a preview strip (its leftmost square), scaled up to ``size`` px: a gallery thumbnail."""
    with Image.open(path) as image:
        side = min(image.width, image.height)
        view = image.convert("RGB").crop((0, 0, side, side))
    return view.resize((max(size, side), max(size, side)), Image.Resampling.NEAREST)


def _box(body: str, kind: str) -> str:
    return f'<div class="uni3d-status uni3d-{kind}" data-phase="{kind}">{body}</div>'


def idle_html() -> str:
    """Before the first run."""
    return _box("Type a prompt and press <b>Generate</b>.", "idle")


def error_html(message: str) -> str:
    """A one-line input or run error (never a traceback)."""
    return _box(f"<b>Error:</b> {html.escape(message)}", "error")


def info_html(message: str) -> str:
    """A neutral one-line note."""
    return _box(html.escape(message), "info")


def summary(metrics: dict[str, Any]) -> str:
    """A finished or cancelled run in one line (steps, time, mesh)."""
    parts = [f"{metrics.get('steps')} steps"]
    if metrics.get("status") == "cancelled":
        parts[0] = f"cancelled at step {metrics.get('cancelled_at_step', metrics.get('steps'))}"
    if "train_seconds" in metrics:
        parts.append(f"{duration(metrics['train_seconds'])} training, {duration(metrics.get('export_seconds'))} export")
    if "mesh_faces" in metrics:
        parts.append(f"{metrics['mesh_vertices']} vertices, {metrics['mesh_faces']} faces")
    if metrics.get("particles"):
        parts.append(f"{len(metrics['particles'])} particles (the viewer shows the first; all are in the downloads)")
    return " · ".join(parts)


def _notes_html(notes: tuple[str, ...] | list[str]) -> str:
    """The prompt's notes (words the prior cannot read, a truncated prompt), one line each."""
    return "".join(f'<div class="uni3d-note">Note: {html.escape(note)}</div>' for note in notes)


def status_html(state: JobState) -> str:
    """The progress bar and one line: phase, step / steps, seconds per step, ETA, elapsed; then the prompt's notes."""
    label = _LABELS.get(state.phase, state.phase)
    if state.phase == "failed":
        return error_html(state.message or "the run failed")
    notes = _notes_html(state.notes or (state.metrics or {}).get("prompt_notes", []))
    if state.phase in ("done", "cancelled"):
        note = (
            " (not exported, as asked; its checkpoint is kept: Generate with the same settings resumes it)"
            if (state.metrics or {}).get("exported") is False
            else " (the partial result is kept; run again with the same settings to resume)"
        )
        line = f"<b>{label}</b> · {html.escape(summary(state.metrics or {}))}"
        return _box(line + (note if state.phase == "cancelled" else "") + notes, state.phase)
    bar = f'<progress max="{state.steps}" value="{state.step}" style="width:100%"></progress>'
    parts = [f"<b>{label}</b>", f"step {state.step} / {state.steps}"]
    if state.resumed_from:
        parts.append(f"resumed from {state.resumed_from}")
    if state.seconds_per_step is not None:
        parts.append(f"{state.seconds_per_step:.2f} s/step")
    if state.eta_seconds is not None:
        parts.append(f"ETA {duration(state.eta_seconds)}")
    parts.append(f"elapsed {duration(state.elapsed)}")
    if state.cancel_requested and state.phase != "exporting":
        parts.append(
            "cancelling after this step…" if state.export_partial else "cancelling after this step, no export…"
        )
    line = '<div class="uni3d-progress-line">' + " · ".join(parts) + "</div>"
    return _box(bar + line + _link_html(state) + notes, state.phase)


def _link_html(state: JobState) -> str:
    """The address that follows this run again: the run keeps going when the page closes or reloads."""
    href = "?run=" + html.escape(state.folder.name)
    return (
        f'<div class="uni3d-link">The run goes on if this page closes; <a href="{href}" class="uni3d-run-link">'
        f"this link</a> follows it again.</div>"
    )


def waiting_html(running: JobState) -> str:
    """A request waiting for the job that holds the device (one job runs at a time)."""
    text = (
        f"Waiting: another run holds the device ({running.folder.name}, {_LABELS.get(running.phase, running.phase)}, "
        f"step {running.step} / {running.steps}); this one starts when it ends."
    )
    return _box(html.escape(text), "queued")


def jobs_html(running: list[JobState]) -> str:
    """The server's running jobs, each a link that follows it."""
    if not running:
        return '<div class="uni3d-jobs">No run is going on this server.</div>'
    items = "".join(
        f'<li><a href="?run={html.escape(s.folder.name)}">{html.escape(s.folder.name)}</a> · '
        f"{_LABELS.get(s.phase, s.phase)} · step {s.step} / {s.steps}</li>"
        for s in running
    )
    return f'<div class="uni3d-jobs">Running on this server:<ul>{items}</ul></div>'
