"""The page: inputs (advanced settings folded away), Generate / Cancel, live progress and previews, the 3D viewer,
turntable video, downloads, and the gallery of earlier runs in the output folder.

The generate handler is a generator: it starts a :class:`~uni3d.app.jobs.Job`, yields the progress line every
:data:`TICK` seconds (and the newest preview when there is one), then the results. The job belongs to the server:
closing or reloading the page leaves it running, and the address ``?run=ID`` (linked on the status line and in
the list of running jobs) follows it again from any page. Bad input is a message in the
page (a warning toast and the status line), never a traceback. ``demo.queue(default_concurrency_limit=1)``
(:func:`launch`) runs one job at a time; Gradio shows the others their place in the queue.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from uni3d.app.examples import EXAMPLE_FIELDS, offered_examples
from uni3d.app.jobs import Job, JobBoard, PriorCache
from uni3d.app.presets import preset_choices
from uni3d.app.priors import find_priors
from uni3d.app.runs import RunResult, latest_live_mesh, latest_preview, list_runs, run_result
from uni3d.app.settings import (
    INPUT_NAMES,
    MAX_PROMPT_CHARS,
    RANGES,
    AppInputs,
    build_config,
    inputs_of_run,
    run_folder,
)
from uni3d.app.view import (
    enlarged,
    error_html,
    idle_html,
    info_html,
    jobs_html,
    status_html,
    summary,
    thumbnail,
    waiting_html,
)
from uni3d.errors import UsageError
from uni3d.tasks.text_to_3d.config import EMBEDDED_PRIOR
from uni3d.tasks.text_to_3d.recipes import RECIPES

TICK = 1.0
"""Seconds between progress updates while a job runs."""
JOBS_EVERY = 2.0
"""Seconds between updates of the list of running jobs."""
CSS = """
.uni3d-status { padding: 8px 12px; border-radius: 8px; background: var(--block-background-fill); }
.uni3d-error { border: 1px solid #d33; color: #b00; }
.uni3d-cancelled { border: 1px solid #d90; }
.uni3d-done { border: 1px solid #3a3; }
"""
Outputs = tuple[Any, Any, Any, Any, Any]
"""(status HTML, preview image, GLB for the viewer, turntable video, download files)."""
_RUN_ID = re.compile(r"[a-z0-9][a-z0-9-]*")
"""A run folder's name as :func:`run_folder` makes it (nothing else is looked up from an address)."""
_UNCHANGED = tuple(gr.skip() for _ in INPUT_NAMES)
"""The form left as it is."""


def _result_outputs(result: RunResult) -> Outputs:
    status = status_html_for(result)
    video = str(result.video) if result.video is not None and result.video.suffix == ".mp4" else None
    glb = str(result.glb) if result.glb is not None else None
    preview = enlarged(result.preview)
    return status, preview, glb, video, result.downloads or None


def status_html_for(result: RunResult) -> str:
    """The status line of a finished or cancelled run loaded from its folder."""
    kind = "cancelled" if result.metrics.get("status") == "cancelled" else "done"
    line = f"{result.metrics.get('prompt', '')} · {summary(result.metrics)} · {result.folder.name}"
    return f'<div class="uni3d-status uni3d-{kind}" data-phase="{kind}"><b>{kind.capitalize()}</b> · {line}</div>'


def _viewer_last(outputs: Iterator[Outputs]) -> Iterator[Outputs]:
    """The page's order of the outputs: the GLB last (see :meth:`App.in_page`)."""
    for status, preview, glb, video, files in outputs:
        yield status, preview, video, files, glb


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or ""


def _number(name: str, label: str, value: float, info: str | None = None) -> gr.Number:
    """A number box naming its range; no ``minimum``/``maximum`` on purpose: Gradio would clamp a typed value
    without a word (a slider) or refuse it with a bare error badge, where :func:`build_config` says which limit."""
    limits = str(RANGES[name])
    return gr.Number(value=value, label=label, info=f"{info}; {limits}" if info else limits, elem_id=f"uni3d-{name}")


def _named_inputs(handler: Callable[[AppInputs, gr.Request], Iterator[Outputs]]) -> Callable[..., Iterator[Outputs]]:
    """``handler(inputs, request)`` as ``f(prompt, negative_prompt, ..., request)``: Gradio passes the components'
    values in :data:`INPUT_NAMES` order and inserts the request where the signature annotates it, and names the
    API's parameters after the signature."""

    def call(*args: Any) -> Iterator[Outputs]:
        *values, request = args
        yield from handler(AppInputs(*values), request)  # a generator function: Gradio streams its outputs

    params = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in INPUT_NAMES]
    params.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request))
    call.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    call.__annotations__ = {"request": gr.Request}  # Gradio finds the request by its type hint
    call.__name__ = getattr(handler, "__name__", "generate")
    return call


class App:
    """The page's handlers around one output folder, one prior cache and one job board."""

    def __init__(self, out: Path, priors: list[tuple[str, str]] | None = None) -> None:
        self.out = Path(out)
        self.priors = priors if priors is not None else find_priors()
        self.cache = PriorCache()
        self.board = JobBoard()

    def gallery(self) -> tuple[list[tuple[Any, str]], list[str]]:
        """Gallery items ``(thumbnail, caption)`` and the matching run folders, newest first."""
        items: list[tuple[Any, str]] = []
        folders: list[str] = []
        for run in list_runs(self.out):
            try:
                image = thumbnail(run.preview) if run.preview is not None else None
            except (OSError, ValueError):  # an unreadable preview: leave that run out, never fail the page
                continue
            items.append((image, run.caption()))
            folders.append(str(run.folder))
        return items, folders

    def generate(self, inputs: AppInputs, request: gr.Request) -> Iterator[Outputs]:
        """Validate, run one job with live progress, then show its result (the API's ``/generate``). The job
        outlives the page: a reload or another browser follows it again at ``?run=ID`` (:meth:`attach`). A request
        for a run that is already going follows that run; one that finds another job still running (its page
        gone) waits for it, saying so: one job runs at a time."""
        try:
            cfg = build_config(inputs)
            folder = run_folder(self.out, cfg)
        except UsageError as err:
            gr.Warning(str(err))
            yield error_html(str(err)), None, None, None, None
            return
        session = _session(request)
        job = self.board.get(folder.name)
        if job is None or job.snapshot().final:
            while busy := self.board.running():
                yield waiting_html(busy[0].snapshot()), gr.skip(), gr.skip(), gr.skip(), gr.skip()
                busy[0].wait(TICK)
            job = Job(cfg, folder, self.cache)
            self.board.add(session, job)
            job.start()
        else:
            self.board.follow(session, job)
        yield from self._follow(job)

    def _follow(self, job: Job) -> Iterator[Outputs]:
        """Progress of ``job`` every :data:`TICK` seconds (with the newest preview), then its result."""
        shown: Path | None = None
        yield status_html(job.snapshot()), None, None, None, None
        while not job.wait(TICK):
            preview = latest_preview(job.folder)
            update = enlarged(preview) if preview is not None and preview != shown else gr.skip()
            shown = preview or shown
            yield status_html(job.snapshot()), update, gr.skip(), gr.skip(), gr.skip()
        state = job.snapshot()
        result = run_result(job.folder) if state.phase in ("done", "cancelled") else None
        if result is None:
            if state.phase == "failed":
                gr.Warning(state.message)
            yield status_html(state), gr.skip(), None, None, None
            return
        _, preview_path, glb, video, files = _result_outputs(result)
        yield status_html(state), preview_path, glb, video, files

    def attach(self, request: gr.Request) -> Iterator[Outputs]:
        """The run named in the page's address (``?run=ID``): its live progress while it runs, else its result;
        nothing without the parameter."""
        run_id = (request.query_params.get("run") if request is not None else None) or ""
        if not run_id:
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        job = self.board.get(run_id)
        if job is not None and not job.snapshot().final:
            self.board.follow(_session(request), job)
            yield from self._follow(job)
            return
        result = run_result(self.out / run_id) if _RUN_ID.fullmatch(run_id) else None
        if result is None:
            yield info_html(f"no run {run_id!r} in {self.out}; pick one under Earlier runs"), None, None, None, None
            return
        yield _result_outputs(result)

    def live_mesh(self, shown: str | None, request: gr.Request) -> tuple[Any, str | None]:
        """For the viewer: the newest live mesh of the running job this page follows
        (:mod:`uni3d.tasks.text_to_3d.live`) when it is not the one ``shown`` already; a skip otherwise (the
        finished asset is set by the run's own event)."""
        job = self.board.followed(_session(request))
        path = None if job is None or job.snapshot().final else latest_live_mesh(job.folder)
        if path is None or str(path) == shown:
            return gr.skip(), shown
        return str(path), str(path)

    def jobs_html(self) -> str:
        """The running jobs of this server, each with the link that follows it."""
        return jobs_html([job.snapshot() for job in self.board.running()])

    def api(self) -> Callable[..., Iterator[Outputs]]:
        """:meth:`generate` as Gradio calls it: one value per :data:`INPUT_NAMES` (the API's named parameters),
        then the request."""
        return _named_inputs(self.generate)

    def in_page(self) -> Callable[..., Iterator[Outputs]]:
        """:meth:`api` for the page: the GLB goes last (to a state that a follow-up event hands to the viewer).

        gr.Model3D stays blank when a generator's last output sets it (the value arrives twice and the viewer's
        lazy loader drops it), so the page sets the viewer from a plain function after the run."""

        def run(inputs: AppInputs, request: gr.Request) -> Iterator[Outputs]:
            yield from _viewer_last(self.generate(inputs, request))

        return _named_inputs(run)

    def attach_in_page(self, request: gr.Request) -> Iterator[Outputs]:
        """:meth:`attach` with the GLB last, as :meth:`in_page`."""
        yield from _viewer_last(self.attach(request))

    def before_run(self) -> tuple[Any, Any, Any]:
        """At the click, before the queue: clear the viewer, and say (in the note and on the status line) when a
        run still holds the device, this page's own included: the new request starts when it ends."""
        busy = self.board.running()
        if not busy:
            return "", None, gr.skip()
        state = busy[0].snapshot()
        note = (
            f"A run is still going ({state.folder.name}: {state.phase}); this request starts when it ends. "
            "Press Cancel to stop the one this page follows."
        )
        return note, None, waiting_html(state)

    def cancel(self, keep: bool, request: gr.Request) -> str:
        """Stop the job this page follows after its current step (the API's ``/cancel``; ``keep``: export the
        partial result, else only its checkpoint stays); returns a note."""
        followed = self.board.followed(_session(request))
        if followed is not None and followed.snapshot().phase == "exporting":
            note = "The run is already exporting its result; it ends when the export does."
        elif self.board.cancel(_session(request), export=bool(keep)):
            note = (
                "Cancelling: the current step finishes, then the partial result is exported and kept."
                if keep
                else "Cancelling: the current step finishes and its checkpoint is saved; nothing is exported."
            )
        else:
            note = "Nothing of yours is running (a queued job starts when the device is free)."
        gr.Info(note)
        return note

    def show_run(self, folders: list[str], evt: gr.SelectData) -> tuple[Any, ...]:
        """Load a gallery run into the viewer, video and downloads, and its settings into the form (so Generate
        makes it again, or a changed copy): :data:`Outputs`, then one value per :data:`INPUT_NAMES`."""
        index = evt.index if isinstance(evt.index, int) else evt.index[0]
        result = run_result(Path(folders[index])) if 0 <= index < len(folders) else None
        if result is None:
            return info_html("that run is gone; refresh the gallery"), None, None, None, None, *_UNCHANGED
        form = inputs_of_run(result.config, result.metrics)
        values = _UNCHANGED if form is None else tuple(getattr(form, name) for name in INPUT_NAMES)
        return *_result_outputs(result), *values


def build_demo(out: Path, priors: list[tuple[str, str]] | None = None) -> gr.Blocks:
    """The page for runs written under ``out`` (``priors``: dropdown choices, default :func:`find_priors`)."""
    app = App(out, priors)
    d = AppInputs(prompt="")
    with gr.Blocks(title="uni3d: text to 3D") as demo:
        gr.Markdown(
            "# uni3d: text to 3D\nScore distillation of a radiance field under a text-conditioned diffusion prior, "
            f"then a mesh (GLB, OBJ) and a turntable video. Runs are saved in `{app.out}`."
        )
        with gr.Row():
            with gr.Column(scale=2):
                prompt = gr.Textbox(
                    label="Prompt",
                    placeholder="a red cube",
                    max_lines=2,
                    info=f"at most {MAX_PROMPT_CHARS} characters (CLIP reads 77 tokens)",
                    elem_id="uni3d-prompt",
                )
                negative = gr.Textbox("", label="Negative prompt", max_lines=2, elem_id="uni3d-negative")
                prior = gr.Dropdown(
                    [(label, value) for label, value in app.priors],
                    value=EMBEDDED_PRIOR,
                    label="Prior",
                    info="an embedded prior (the default shapes one, or the composite one that knows noses, handles "
                    "and two things stacked or side by side), or a Stable Diffusion folder found on this machine (it runs the "
                    f"field's recipe for the preset: {', '.join(r for r in RECIPES if r != 'embedded')}; steps and "
                    "guidance left at their defaults take the recipe's)",
                    allow_custom_value=True,
                    elem_id="uni3d-prior",
                )
                with gr.Row():
                    preset = gr.Dropdown(
                        preset_choices(),
                        value=d.preset,
                        label="Preset",
                        info="what the step optimises, and what it trains beside sds",
                        elem_id="uni3d-preset",
                    )
                    seed = _number("seed", "Seed", d.seed)
                steps = _number("steps", "Steps", d.steps)
                particles = _number(
                    "particles",
                    "Particles",
                    d.particles,
                    info="assets made together, each from its own noise, sharing one fake score (vsd, uni-*): "
                    "several answers to one prompt",
                )
                with gr.Accordion("Advanced settings", open=False, elem_id="uni3d-advanced"):
                    guidance = _number("guidance_scale", "Guidance scale", d.guidance_scale)
                    render_size = _number("render_size", "Render size (px, 0 = the prior's)", d.render_size)
                    preview_every = _number("preview_every", "Preview every (steps)", d.preview_every)
                    mc_res = _number("mc_resolution", "Export: marching-cubes resolution", d.mc_resolution)
                    texture = _number("texture_size", "Export: texture size (px)", d.texture_size)
                    frames = _number("turntable_frames", "Export: turntable frames", d.turntable_frames)
                    frame_size = _number("turntable_size", "Export: turntable size (px)", d.turntable_size)
                examples = offered_examples(app.priors)
                if examples:
                    fills = {"prompt": prompt, "prior": prior, "preset": preset, "particles": particles}
                    gr.Examples(examples, [fills[name] for name in EXAMPLE_FIELDS], label="Examples")
                with gr.Row():
                    run_btn = gr.Button("Generate", variant="primary", elem_id="uni3d-generate")
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="uni3d-cancel")
                keep_partial = gr.Checkbox(
                    True,
                    label="Keep the partial result on Cancel",
                    info="export the mesh, video and downloads of a cancelled run; off: only its checkpoint stays "
                    "(Generate again resumes it)",
                    elem_id="uni3d-keep-partial",
                )
                note = gr.Markdown("", elem_id="uni3d-note")
                jobs = gr.HTML(app.jobs_html(), elem_id="uni3d-jobs")
                status = gr.HTML(idle_html(), elem_id="uni3d-status")
                preview = gr.Image(
                    label="Preview (4 views)", type="filepath", interactive=False, elem_id="uni3d-preview"
                )
            with gr.Column(scale=3):
                model = gr.Model3D(label="3D model (GLB)", height=420, elem_id="uni3d-model")
                with gr.Row():
                    video = gr.Video(label="Turntable", autoplay=True, loop=True, elem_id="uni3d-video")
                    files = gr.File(label="Downloads (GLB, OBJ zip)", file_count="multiple", elem_id="uni3d-files")
        with gr.Row():
            gr.Markdown("## Earlier runs")
            refresh = gr.Button("Refresh", size="sm", scale=0, elem_id="uni3d-refresh")
        gallery = gr.Gallery(
            label="Runs in the output folder",
            columns=6,
            height=240,
            object_fit="contain",
            fit_columns=False,
            elem_id="uni3d-gallery",
        )
        folders = gr.State([])

        components = {
            "prompt": prompt,
            "negative_prompt": negative,
            "prior": prior,
            "preset": preset,
            "steps": steps,
            "seed": seed,
            "guidance_scale": guidance,
            "render_size": render_size,
            "preview_every": preview_every,
            "mc_resolution": mc_res,
            "texture_size": texture,
            "turntable_frames": frames,
            "turntable_size": frame_size,
            "particles": particles,
        }
        inputs = [components[name] for name in INPUT_NAMES]
        outputs = [status, preview, model, video, files]
        device = {"concurrency_id": "device", "concurrency_limit": 1}  # one job at a time, page and API together
        glb = gr.State(None)
        clear = run_btn.click(  # every click counts: a second one while a run goes is said, then queued
            app.before_run, None, [note, model, status], api_visibility="private", queue=False, trigger_mode="multiple"
        )
        run = clear.then(  # chained, so the viewer is cleared before (never after) the run sets it
            app.in_page(),
            inputs,
            [status, preview, video, files, glb],
            api_name="generate_in_page",
            api_visibility="private",
            show_progress="minimal",
            show_progress_on=status,  # Gradio's queue position shows on the status line, previews stay visible
            **device,
        )
        run.then(lambda path: path, glb, model, api_visibility="private", queue=False)
        run.then(app.gallery, None, [gallery, folders], api_visibility="private", concurrency_limit=None)
        api_btn = gr.Button(visible=False)  # the API's /generate: the same handler with the viewer as an output
        api_btn.click(app.api(), inputs, outputs, api_name="generate", **device)
        cancel_btn.click(app.cancel, keep_partial, note, api_name="cancel", concurrency_limit=None, queue=False)
        refresh.click(app.gallery, None, [gallery, folders], api_visibility="private", concurrency_limit=None)
        gallery.select(app.show_run, folders, outputs + inputs, api_visibility="private", concurrency_limit=None)
        demo.load(app.gallery, None, [gallery, folders], api_visibility="private", concurrency_limit=None)
        attached = demo.load(
            app.attach_in_page,
            None,
            [status, preview, video, files, glb],
            api_visibility="private",
            concurrency_limit=None,
            show_progress="hidden",
        )
        attached.then(lambda path: path or gr.skip(), glb, model, api_visibility="private", queue=False)
        timer = gr.Timer(JOBS_EVERY)
        timer.tick(app.jobs_html, None, jobs, api_visibility="private", concurrency_limit=None, show_progress="hidden")
        live = gr.State(None)  # the live mesh this page's viewer shows
        timer.tick(
            app.live_mesh,
            live,
            [model, live],
            api_visibility="private",
            concurrency_limit=None,
            show_progress="hidden",
            queue=False,
        )
    return demo


def launch(
    out: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    priors: list[tuple[str, str]] | None = None,
    block: bool = True,
) -> gr.Blocks:
    """Build the page, queue one job at a time, and serve it on ``host:port`` (``block=False``: return at once)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    demo = build_demo(out, priors)
    demo.queue(default_concurrency_limit=1)
    demo.launch(
        server_name=host,
        server_port=port,
        allowed_paths=[str(out.resolve())],
        prevent_thread_lock=not block,
        css=CSS,
        footer_links=["api"],
        quiet=not block,
    )
    return demo
