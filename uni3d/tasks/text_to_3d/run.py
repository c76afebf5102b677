"""``generate``: prompt -> optimised field -> exported asset, with checkpoints, resume, previews and metrics.

Run folder (every file written atomically): ``config.json`` (resolved settings), ``checkpoint.pt`` (every
``checkpoint_every`` steps and at the end of training; the same command resumes from it; the one before it stays as
``checkpoint.prev.pt`` until the run is done, an unreadable one is moved aside: :mod:`uni3d.checkpoints`),
``previews/step_*.png`` (4 orbit views every ``preview_every`` steps; with ``live_previews`` also the live mesh's
256-px views and GLB: :mod:`uni3d.tasks.text_to_3d.live`), then ``model.glb``, ``model_vertex_color.glb``, ``model.obj``
(+ ``.mtl`` + texture PNG), ``turntable.mp4`` (or ``.gif``), ``contact_sheet.png`` and, last, ``metrics.json``
with ``"status": "done"`` (its presence marks a finished run). A run stopped by ``should_stop`` saves its checkpoint,
exports the partial asset all the same (unless ``export_cancelled()`` says no: then nothing is written beyond the
checkpoint and the folder stays an unfinished run) and writes ``"status": "cancelled"`` with ``cancelled_at_step``:
the same command then resumes it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from uni3d.checkpoints import CHECKPOINT, load_checkpoint, previous, save_checkpoint
from uni3d.devices import resolve_device
from uni3d.engine import NonFiniteError
from uni3d.errors import UsageError
from uni3d.export.asset import export_asset
from uni3d.export.video import contact_sheet
from uni3d.io import save_json
from uni3d.models.prompt_check import CLI_REMEDIES, Remedies, prompt_notes
from uni3d.models.stable_diffusion import PriorOptions, StableDiffusionPrior
from uni3d.scene.background import SolidBackground
from uni3d.tasks.text_to_3d.bank import TeacherBank
from uni3d.tasks.text_to_3d.config import ADDED_LATER, MEMORY_OPTIONS, GenerateConfig
from uni3d.tasks.text_to_3d.live import LivePreviews
from uni3d.tasks.text_to_3d.memory import check_particles_fit
from uni3d.tasks.text_to_3d.preflight import preflight
from uni3d.tasks.text_to_3d.trainer import StepStats, TextTo3D, encode_side, prior_image_size

RESUMABLE_CHANGES = frozenset(
    {
        "steps",
        "checkpoint_every",
        "snapshot_every",
        "max_rollbacks",
        "preview_every",
        "export",
        "device",
        "recipe",
        *MEMORY_OPTIONS,
    }
)
"""Settings a resumed run may change (the rest must equal the checkpoint's; a recipe's name is only a label, the
values it set are compared one by one)."""
Callback = Callable[[int, StepStats], None]
"""``callback(step, stats)`` after every completed step (progress bars, the app, tests)."""
StopCheck = Callable[[], bool]
"""``should_stop()`` after every completed step (and its callback): ``True`` ends training there (a clean cancel)."""


def load_prior(cfg: GenerateConfig) -> StableDiffusionPrior:
    """The prior of ``cfg``; missing or damaged weights are a one-line error saying how to provide them."""
    preflight(cfg)
    memory = {name: getattr(cfg, name) for name in MEMORY_OPTIONS}
    opts = PriorOptions(cfg.dtype, str(resolve_device(cfg.device)), cfg.allow_download, **memory)
    return StableDiffusionPrior.from_pretrained(cfg.prior_path, opts)


def _check_resumable(saved: dict[str, Any], now: dict[str, Any], out: Path) -> None:
    """One-line error when settings outside :data:`RESUMABLE_CHANGES` differ (``None`` in ``now``: unresolved;
    settings inert for the preset, :meth:`GenerateConfig.inert_settings`, are not compared)."""
    skip = RESUMABLE_CHANGES | GenerateConfig.from_dict(now).inert_settings()
    saved = {**ADDED_LATER, **saved}  # a run made before a setting existed had its default
    changed = sorted(k for k in now if k not in skip and now[k] is not None and saved.get(k) != now[k])
    if changed:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed[:3])
        raise UsageError(
            f"{out} holds a run with other settings ({shown}); resume it with the same settings or use another --out"
        )


def _save_checkpoint(path: Path, trainer: TextTo3D, config: dict[str, Any], seconds: float) -> None:
    save_checkpoint(path, {"config": config, **trainer.checkpoint(seconds)})


def finished_metrics(cfg: GenerateConfig, out: Path) -> dict[str, Any] | None:
    """The metrics of a finished run of ``cfg`` in ``out`` (``metrics.json`` with status ``done``), ``None`` if
    there is none; a finished run with other settings is a one-line error (never silently taken as this one)."""
    try:
        metrics = json.loads((Path(out) / "metrics.json").read_text())
        saved = json.loads((Path(out) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict) or metrics.get("status") != "done":
        return None
    _check_resumable(saved, json.loads(json.dumps(cfg.as_dict())), Path(out))
    return metrics


def generate(
    cfg: GenerateConfig,
    out: Path,
    prior: StableDiffusionPrior | None = None,
    progress: bool = True,
    callback: Callback | None = None,
    log: Callable[[str], None] = lambda _: None,
    should_stop: StopCheck | None = None,
    *,
    remedies: Remedies = CLI_REMEDIES,
    export_cancelled: Callable[[], bool] = lambda: True,
    live_previews: bool = False,
) -> dict[str, Any]:
    """Run (or resume, or return the finished) ``cfg`` in ``out``; returns the metrics (also ``metrics.json``).
    ``remedies``: the prompt notes' advice in the words of the CLI or the app (:func:`prompt_notes`).

    ``should_stop`` returning ``True`` after step ``k`` stops training there: the checkpoint is saved, the partial
    asset exported and ``metrics.json`` says ``"status": "cancelled"``, ``"cancelled_at_step": k``. When
    ``export_cancelled()`` (asked then, so a page's choice at its Cancel click counts) is ``False``, the export and
    ``metrics.json`` are skipped and the returned metrics say ``"exported": False``. ``live_previews``: the live
    mesh at preview steps (:mod:`uni3d.tasks.text_to_3d.live`; the app's runs).
    """
    out = Path(out)
    preflight(cfg, out, check_prior=prior is None)
    finished = finished_metrics(cfg, out)
    if finished is not None:
        log(f"{out} is finished already (delete its metrics.json to train on or export again)")
        return finished
    prior = prior if prior is not None else load_prior(cfg)
    notes = prompt_notes(
        prior.tokenizer, cfg.prompt, cfg.negative_prompt, cfg.view_dependent, prior.views, remedies=remedies
    )
    for note in notes:
        log(f"note: {note}")
    resolved = cfg.resolved(prior_image_size(prior))
    largest = max(int(resolved.render_size or 0), (resolved.render_milestone or (0, 0))[1])
    check_particles_fit(resolved, largest, str(prior.log_sigmas.device))
    encode_side(resolved, prior)  # a bad encode side is a one-line error before the run folder exists
    config = json.loads(json.dumps(resolved.as_dict()))
    state = load_checkpoint(out / CHECKPOINT, map_location=prior.log_sigmas.device, required="config", log=log)
    if state is not None:
        _check_resumable(state["config"], config, out)
    out.mkdir(parents=True, exist_ok=True)
    save_json(out / "config.json", config)
    torch.manual_seed(resolved.seed)
    mid_fov = math.radians(sum(resolved.fov_deg) / 2)
    bank = TeacherBank.from_state(state["bank"], mid_fov) if state is not None and state["bank"] is not None else None
    trainer = TextTo3D(resolved, prior, bank=bank)
    seconds = trainer.load_checkpoint(state) if state is not None else 0.0
    resumed_from = trainer.step
    if state is not None:
        log(f"resuming {out} from step {trainer.step}")
    live = LivePreviews(out / "previews", log) if live_previews else None
    seconds = _train(trainer, out, config, seconds, progress, callback, should_stop, live=live)
    cancelled = trainer.step < resolved.steps
    if cancelled and not export_cancelled():
        (out / "metrics.json").unlink(missing_ok=True)  # an earlier cancel's result would show a stale step
        return {
            "status": "cancelled",
            "cancelled_at_step": trainer.step,
            "exported": False,
            "prompt": cfg.prompt,
            "preset": cfg.preset,
            "steps": trainer.step,
            "prompt_notes": notes,
        }
    return _finish(trainer, out, resumed_from, seconds, notes, cancelled=cancelled)


def _train(
    trainer: TextTo3D,
    out: Path,
    config: dict[str, Any],
    seconds: float,
    progress: bool,
    callback: Callback | None,
    should_stop: StopCheck | None = None,
    *,
    live: LivePreviews | None = None,
) -> float:
    """The loop: steps with rollback, checkpoints, previews; a final checkpoint when training ends or is stopped.
    Returns the training seconds (this call's plus those before the checkpoint it resumed from; live previews'
    time left out)."""
    cfg = trainer.cfg
    bar = tqdm(total=cfg.steps, initial=trainer.step, desc=cfg.preset, disable=not progress, leave=False)
    start = time.perf_counter() - seconds

    def elapsed() -> float:
        return time.perf_counter() - start - (live.spent if live is not None else 0.0)

    with bar:
        while trainer.step < cfg.steps:
            stats = trainer.train_step()
            bar.n = trainer.step
            if stats is None:
                bar.set_postfix(rollbacks=trainer.counters.rollbacks, refresh=True)
                continue
            bar.set_postfix(loss=f"{stats.loss:.3g}", opacity=f"{stats.opacity:.2f}", refresh=False)
            bar.update(0)
            step = trainer.step
            if step % cfg.preview_every == 0:
                sheet = trainer.previews().numpy()  # every particle's 4 views, one row each
                contact_sheet(sheet, out / "previews" / f"step_{step:06d}.png", columns=4, max_tiles=len(sheet))
                if live is not None:
                    live.maybe(trainer, step)
            saved = step % cfg.checkpoint_every == 0 or step == cfg.steps
            if saved:
                _save_checkpoint(out / CHECKPOINT, trainer, config, elapsed())
            if callback is not None:
                callback(step, stats)
            if step < cfg.steps and should_stop is not None and should_stop():
                if not saved:
                    _save_checkpoint(out / CHECKPOINT, trainer, config, elapsed())
                break
    return elapsed()


def _finish(
    trainer: TextTo3D, out: Path, resumed_from: int, seconds: float, notes: list[str], cancelled: bool = False
) -> dict[str, Any]:
    """Export the asset and write ``metrics.json`` last (status ``cancelled`` when training stopped early; ``notes``:
    :func:`prompt_notes` of the prompt)."""
    cfg = trainer.cfg
    if not trainer.field_is_finite():
        raise NonFiniteError("the field has non-finite parameters; refusing to export")
    t0 = time.perf_counter()
    if cfg.particles == 1:
        exported = _export(trainer, 0, out)
    else:  # every particle from the same views, one row each, then each particle's own folder
        sheet = trainer.previews().numpy()
        for name in ("contact_sheet.png", "preview.png"):
            contact_sheet(sheet, out / name, columns=4, max_tiles=len(sheet))
        rows = [_export(trainer, k, out / f"particle-{k}") for k in range(cfg.particles)]
        exported = {
            "files": ["contact_sheet.png", "preview.png", *(f"particle-{k}/model.glb" for k in range(cfg.particles))],
            "particles": [{"particle": k, **row} for k, row in enumerate(rows)],
        }
    losses = trainer.losses
    tail = losses[-20:]
    metrics = {
        "status": "cancelled" if cancelled else "done",
        **({"cancelled_at_step": trainer.step} if cancelled else {}),
        "prompt": cfg.prompt,
        "preset": cfg.preset,
        "prior": cfg.prior,
        "prompt_notes": notes,
        "steps": trainer.step,
        "resumed_from_step": resumed_from,
        "render_size": trainer.shown_size,
        "prior_image_size": trainer.prior_size,
        **({"latent_map_r2": round(trainer.latent_map.r2, 4)} if trainer.latent_map is not None else {}),
        "train_seconds": round(seconds, 2),
        "seconds_per_step": round(seconds / max(1, trainer.step), 4),
        "export_seconds": round(time.perf_counter() - t0, 2),
        "loss_first": losses[0] if losses else None,
        "loss_last": sum(tail) / len(tail) if tail else None,
        **trainer.counters.report("rollback"),
        **exported,
    }
    save_json(out / "metrics.json", metrics)
    if not cancelled:
        previous(out / CHECKPOINT).unlink(missing_ok=True)  # the final checkpoint was written last; one is enough
    return metrics


def _export(trainer: TextTo3D, particle: int, out: Path) -> dict[str, Any]:
    """``particle``'s ``preview.png`` and asset (:func:`export_asset`) in ``out``; returns its metrics: iso-level,
    mesh size, files."""
    cfg = trainer.cfg
    out.mkdir(parents=True, exist_ok=True)
    contact_sheet(trainer.preview(particle=particle).numpy(), out / "preview.png", columns=4)
    renderer = trainer.renderers[particle].eval()
    if renderer.backend == "torch":
        renderer = renderer.cpu()  # the exporter builds its cameras and grids on the CPU
    renderer.background = SolidBackground((1.0, 1.0, 1.0)).to(next(renderer.buffers()).device)
    asset = export_asset(renderer, out, cfg.export, distance=sum(cfg.distance) / 2)
    return {
        "iso_level": asset.iso_level,
        "mesh_vertices": len(asset.mesh.vertices),
        "mesh_faces": len(asset.mesh.faces),
        "files": ["model.glb", "model_vertex_color.glb", "model.obj", asset.video.name, "preview.png"],
    }
