"""The job runner: one :func:`uni3d.tasks.text_to_3d.run.generate` call in a background thread, with a progress and
cancel bridge for the page.

The page's handler starts a :class:`Job`, polls :meth:`Job.snapshot` every fraction of a second and yields what
changed; :meth:`Job.cancel` (the Cancel button) makes ``generate`` stop after the current step, save its checkpoint
and export the partial asset (``metrics.json`` status ``cancelled``). A job outlives the page that started it
(:class:`JobBoard`). The prior is loaded once and kept (:class:`PriorCache`); one job runs at a time.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from uni3d.errors import UsageError
from uni3d.tasks.text_to_3d.config import GenerateConfig

PHASES = ("loading", "training", "exporting", "done", "cancelled", "failed")
"""A job's phases in order; the last three are final."""
FINAL = frozenset(PHASES[3:])


@dataclass(frozen=True)
class JobState:
    """A snapshot of a job for the page (``seconds_per_step``, ``eta_seconds``: from this job's second step on)."""

    phase: str
    folder: Path
    steps: int
    step: int = 0
    resumed_from: int = 0
    loss: float | None = None
    seconds_per_step: float | None = None
    eta_seconds: float | None = None
    elapsed: float = 0.0
    cancel_requested: bool = False
    export_partial: bool = True
    message: str = ""
    notes: tuple[str, ...] = ()
    metrics: dict[str, Any] | None = None

    @property
    def final(self) -> bool:
        """Whether the job has ended (done, cancelled or failed)."""
        return self.phase in FINAL


class PriorCache:
    """Keeps the last loaded prior (loading the embedded one takes seconds, a full SD one much longer)."""

    def __init__(self, loader: Callable[[GenerateConfig], Any] | None = None) -> None:
        self._loader = loader
        self._lock = threading.Lock()
        self._key: tuple[str, str, str] | None = None
        self._prior: Any = None

    def get(self, cfg: GenerateConfig) -> Any:
        """The prior of ``cfg`` (loaded on first use, then reused while the prior, device and dtype stay)."""
        key = (cfg.prior_path, cfg.device, cfg.dtype)
        with self._lock:
            if self._key != key:
                if self._loader is None:
                    from uni3d.tasks.text_to_3d.run import load_prior  # diffusers: imported when the first job runs

                    self._loader = load_prior
                self._prior, self._key = None, None
                self._prior, self._key = self._loader(cfg), key
            return self._prior


class Job:
    """One generation in a background thread; thread-safe snapshots and cancel."""

    def __init__(self, cfg: GenerateConfig, folder: Path, priors: PriorCache) -> None:
        self.cfg, self.folder, self._priors = cfg, Path(folder), priors
        self._stop = threading.Event()
        self._export_partial = True
        self._lock = threading.Lock()
        self._state = JobState(phase="loading", folder=self.folder, steps=cfg.steps)
        self._start = time.perf_counter()
        self._first: tuple[int, float] | None = None  # (step, time) of this job's first completed step
        self._thread = threading.Thread(target=self._run, name=f"uni3d-job-{self.folder.name}", daemon=True)

    @property
    def id(self) -> str:
        """The job's id: its run folder's name (one folder, one job)."""
        return self.folder.name

    def start(self) -> Job:
        """Start the thread; returns ``self``."""
        self._start = time.perf_counter()
        self._thread.start()
        return self

    def cancel(self, export: bool = True) -> None:
        """Ask the job to stop after the current step (it then saves its checkpoint, exports the partial asset when
        ``export`` and ends)."""
        self._export_partial = export
        self._stop.set()
        self._update(cancel_requested=True, export_partial=export)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; ``True`` if it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def snapshot(self) -> JobState:
        """The current state, with the elapsed time."""
        with self._lock:
            state = self._state
        return state if state.final else replace(state, elapsed=time.perf_counter() - self._start)

    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._state = replace(self._state, **changes)

    def _on_step(self, step: int, stats: Any) -> None:
        now = time.perf_counter()
        changes: dict[str, Any] = {"step": step, "loss": float(stats.loss), "phase": "training"}
        if self._first is None:
            self._first = (step, now)
            changes["resumed_from"] = step - 1
        first_step, first_time = self._first
        if step > first_step:  # the rate of this job's own steps (not prior loading or an earlier session's)
            rate = (now - first_time) / (step - first_step)
            changes.update(seconds_per_step=rate, eta_seconds=rate * (self.cfg.steps - step))
        if step >= self.cfg.steps or (self._stop.is_set() and self._export_partial):
            changes.update(phase="exporting", eta_seconds=None)
        self._update(**changes)

    def _log(self, line: str) -> None:
        """``generate``'s notes on the prompt (:func:`uni3d.models.prompt_check.prompt_notes`) go on the page."""
        if line.startswith("note: "):
            with self._lock:
                self._state = replace(self._state, notes=(*self._state.notes, line.removeprefix("note: ")))

    def _run(self) -> None:
        from uni3d.models.prompt_check import APP_REMEDIES
        from uni3d.tasks.text_to_3d.run import generate  # diffusers: imported when the first job runs

        try:
            prior = self._priors.get(self.cfg)
            self._update(phase="training")
            metrics = generate(
                self.cfg,
                self.folder,
                prior=prior,
                progress=False,
                callback=self._on_step,
                log=self._log,
                should_stop=self._stop.is_set,
                remedies=APP_REMEDIES,
                export_cancelled=lambda: self._export_partial,
                live_previews=True,
            )
            status = metrics.get("status", "done")
            self._update(phase="cancelled" if status == "cancelled" else "done", step=metrics["steps"], metrics=metrics)
        except UsageError as err:
            self._update(phase="failed", message=str(err))
        except Exception as err:  # never take the server down: report one line, log the traceback
            traceback.print_exc(file=sys.stderr)
            first = (str(err).strip().splitlines() or [""])[0][:300]
            self._update(phase="failed", message=f"{type(err).__name__}: {first}")


class JobBoard:
    """Every job of the server by id (its run folder's name), and the job each browser session follows.

    A job belongs to the server, not to a page: closing or reloading the page leaves it running, and any page that
    asks for its id (``?run=ID``) follows it again; the Cancel button finds the job its own session follows."""

    KEEP = 32
    """Finished jobs kept for pages that reattach late (older ones are read from their folders)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._followed: dict[str, str] = {}

    def add(self, session: str, job: Job) -> None:
        """Register ``job`` (started or about to be) as followed by ``session``."""
        with self._lock:
            self._jobs[job.id] = job
            self._followed[session] = job.id
            finished = [key for key, known in self._jobs.items() if known.snapshot().final]
            for key in finished[: max(0, len(finished) - self.KEEP)]:
                del self._jobs[key]

    def follow(self, session: str, job: Job) -> None:
        """``session`` now follows ``job`` (a page that reattached)."""
        with self._lock:
            self._followed[session] = job.id

    def followed(self, session: str) -> Job | None:
        """The job ``session`` follows, if any."""
        with self._lock:
            return self._jobs.get(self._followed.get(session, ""))

    def get(self, job_id: str) -> Job | None:
        """The job with ``job_id``, if this server ran it."""
        with self._lock:
            return self._jobs.get(job_id)

    def running(self) -> list[Job]:
        """Jobs not yet ended, oldest first."""
        with self._lock:
            jobs = list(self._jobs.values())
        return [job for job in jobs if not job.snapshot().final]

    def cancel(self, session: str, export: bool = True) -> bool:
        """Cancel the running job ``session`` follows (``export``: keep its partial asset); ``False`` if it follows
        none."""
        job = self.followed(session)
        if job is None or job.snapshot().final:
            return False
        job.cancel(export)
        return True
