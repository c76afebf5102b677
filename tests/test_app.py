"""The web app's parts without a server: input validation, run folders, gallery listing, priors, status lines, and
the job runner's progress and cancel bridge on a tiny random prior."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from transformers import CLIPTokenizer

from uni3d.app.examples import EXAMPLE_FIELDS, EXAMPLES, offered_examples
from uni3d.app.jobs import Job, JobBoard, JobState, PriorCache
from uni3d.app.presets import preset_choices
from uni3d.app.priors import find_priors
from uni3d.app.runs import list_runs, obj_zip, run_result
from uni3d.app.settings import MAX_PROMPT_CHARS, AppInputs, build_config, inputs_of_run, run_folder
from uni3d.app.view import duration, enlarged, error_html, status_html, thumbnail
from uni3d.errors import UsageError
from uni3d.models.prompt_check import APP_REMEDIES, prompt_notes
from uni3d.paths import REPO_ROOT
from uni3d.tasks.text_to_3d import live
from uni3d.tasks.text_to_3d.config import EMBEDDED_PRIOR, TEXT_TO_3D_PRESETS, GenerateConfig


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"prompt": "   "}, "prompt is empty"),
        ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, f"at most {MAX_PROMPT_CHARS}"),
        ({"negative_prompt": "y" * (MAX_PROMPT_CHARS + 1)}, "negative prompt has"),
        ({"steps": 0}, "steps must be from 1 to 5000"),
        ({"steps": 2.5}, "steps must be a whole number"),
        ({"seed": None}, "seed must be a number"),
        ({"mc_resolution": 8}, "mc resolution must be from 16"),
        ({"guidance_scale": float("nan")}, "guidance scale must be a number"),
        ({"preset": "nope"}, "unknown preset"),
        ({"preset": "dmd"}, "teacher ODE samples"),
    ],
)
def test_bad_inputs_are_one_line_errors(changes: dict, needle: str) -> None:
    with pytest.raises(UsageError, match=needle) as err:
        build_config(AppInputs(**{"prompt": "a red cube", **changes}))
    assert "\n" not in str(err.value)
    assert "<b>Error:</b>" in error_html(str(err.value)) and "&lt;" in error_html("<script>")


def test_inputs_become_a_config_and_a_stable_run_folder(tmp_path: Path) -> None:
    cfg = build_config(AppInputs("  a   red cube ", steps=4.0, render_size=0, mc_resolution=32, texture_size=64))
    assert cfg.prompt == "a red cube" and cfg.steps == 4 and isinstance(cfg.steps, int)
    assert cfg.render_size is None and cfg.export.mc_resolution == 32 and cfg.prior == EMBEDDED_PRIOR
    folder = run_folder(tmp_path, cfg)
    assert folder.parent == tmp_path and folder.name.startswith("a-red-cube-")
    assert run_folder(tmp_path, build_config(AppInputs("a red cube", steps=4, preview_every=3, mc_resolution=32,
                                                       texture_size=64))) == folder  # fmt: skip
    assert run_folder(tmp_path, build_config(AppInputs("a red cube", steps=5))) != folder
    several = build_config(AppInputs("a red cube", steps=4, mc_resolution=32, texture_size=64, particles=3))
    assert several.particles == 3 and run_folder(tmp_path, several) != folder
    with pytest.raises(UsageError, match="particles must be from 1 to 8"):
        build_config(AppInputs("a red cube", particles=9))


def test_a_stable_diffusion_prior_gets_its_recipe_unless_the_form_was_changed(tiny_prior) -> None:
    folder, _ = tiny_prior
    untouched = build_config(AppInputs("a hamburger", prior=str(folder)))
    assert untouched.recipe == "sd-sds" and (untouched.steps, untouched.guidance_scale) == (10000, 100.0)
    changed = build_config(AppInputs("a hamburger", prior=str(folder), preset="vsd", steps=800, guidance_scale=10))
    assert changed.recipe == "sd-vsd" and (changed.steps, changed.guidance_scale) == (800, 10.0)
    assert build_config(AppInputs("a red cube")).recipe == "embedded"


def _fake_run(folder: Path, status: str = "done", prompt: str = "a red cube") -> Path:
    folder.mkdir(parents=True)
    (folder / "material_0.png").write_bytes(b"png")
    (folder / "model.mtl").write_text("newmtl material_0\nmap_Kd material_0.png\n")
    (folder / "model.obj").write_text("mtllib model.mtl\nv 0 0 0\n")
    (folder / "model.glb").write_bytes(b"glTF")
    (folder / "preview.png").write_bytes(b"png")
    metrics = {"status": status, "prompt": prompt, "preset": "sds", "steps": 3, "cancelled_at_step": 3}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_runs_are_listed_newest_first_with_an_obj_zip(tmp_path: Path) -> None:
    old = _fake_run(tmp_path / "old", prompt="a blue sphere")
    time.sleep(0.02)
    new = _fake_run(tmp_path / "new", status="cancelled")
    (tmp_path / "running").mkdir()  # no metrics.json yet: not listed
    runs = list_runs(tmp_path)
    assert [r.folder for r in runs] == [new, old]
    assert runs[0].caption().startswith("a red cube · sds · 3 steps (cancelled) · 20")  # then the date
    assert runs[0].obj_zip is None  # listing writes nothing
    result = run_result(new)
    assert result is not None and result.obj_zip == obj_zip(new)
    with zipfile.ZipFile(result.obj_zip) as zf:
        assert sorted(zf.namelist()) == ["material_0.png", "model.mtl", "model.obj"]
    assert result.downloads == [str(new / "model.glb"), str(new / "model_obj.zip")]
    assert list_runs(tmp_path / "missing") == []


def test_every_preset_has_a_one_line_description_in_the_menu() -> None:
    choices = preset_choices()
    assert [value for _, value in choices] == list(TEXT_TO_3D_PRESETS)
    assert all(label.startswith(f"{value}: ") and len(label) <= 130 for label, value in choices)
    assert len({label.split(": ", 1)[1] for label, _ in choices}) == len(choices)  # no two alike


def test_captions_tell_runs_of_one_prompt_apart(tmp_path: Path) -> None:
    captions = set()
    for name, seed, preset in (("a", 0, "sds"), ("b", 1, "sds"), ("c", 0, "vsd")):
        run = _fake_run(tmp_path / name)
        (run / "config.json").write_text(json.dumps({"prompt": "a red cube", "seed": seed, "preset": preset}))
        metrics = json.loads((run / "metrics.json").read_text())
        (run / "metrics.json").write_text(json.dumps({**metrics, "preset": preset}))
        captions.add(run_result(run, make_zip=False).caption())
    assert len(captions) == 3 and any("seed 1" in c for c in captions)


def test_reopening_a_run_refills_the_form_that_makes_it_again(tiny_prior, tmp_path: Path) -> None:
    folder, _ = tiny_prior
    asked = AppInputs("a red cube", prior=str(folder), preset="vsd", steps=7, seed=5, guidance_scale=12.5,
                      particles=2, mc_resolution=48, turntable_frames=6)  # fmt: skip
    cfg = build_config(asked)
    saved = json.loads(json.dumps(cfg.resolved(32).as_dict()))  # as config.json holds it: resolved for a 32 px prior
    again = inputs_of_run(saved, {"prior_image_size": 32})
    assert again is not None and again.preset == "vsd" and again.seed == 5 and again.render_size == 0
    assert run_folder(tmp_path, build_config(again)) == run_folder(tmp_path, cfg)  # Generate finds the same run
    assert inputs_of_run({"steps": 3}, {}) is None


def test_a_run_of_several_particles_offers_every_particle(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for k in range(2):
        _fake_run(run / f"particle-{k}")
    (run / "preview.png").write_bytes(b"png")
    metrics = {"status": "done", "prompt": "a red object", "preset": "vsd", "steps": 3}
    (run / "metrics.json").write_text(json.dumps({**metrics, "particles": [{"particle": 0}, {"particle": 1}]}))
    result = run_result(run)
    assert (
        result is not None and result.glb == run / "particle-0" / "model.glb" and result.preview == run / "preview.png"
    )
    files = ["particle-0/model.glb", "particle-0/model_obj.zip", "particle-1/model.glb", "particle-1/model_obj.zip"]
    assert result.downloads == [str(run / f) for f in files]


def test_priors_are_found_locally(tmp_path: Path) -> None:
    snap = tmp_path / "cache" / "models--org--tiny-sd" / "snapshots" / "abcdef123456"
    snap.mkdir(parents=True)
    (snap / "model_index.json").write_text("{}")
    extra = tmp_path / "mine" / "sd"
    extra.mkdir(parents=True)
    (extra / "model_index.json").write_text("{}")
    (tmp_path / "mine" / "not-a-prior").mkdir()
    found = find_priors([tmp_path / "mine"], cache=tmp_path / "cache")
    assert found[0][1] == EMBEDDED_PRIOR
    assert (str(extra), str(extra)) in found and ("org/tiny-sd (abcdef12)", str(snap)) in found
    assert len(found) == len({v for _, v in found})


def test_the_shipped_embedded_priors_are_offered_by_name() -> None:
    found = dict((value, label) for label, value in find_priors(cache=Path("/nonexistent")))
    composite = str(REPO_ROOT / "assets" / "priors" / "shapes-composite")
    assert found[composite] == "embedded shapes-composite prior (assets/priors/shapes-composite)"
    assert list(found)[0] == EMBEDDED_PRIOR and str(REPO_ROOT / "assets" / "priors" / "shapes-coarse") in found


@pytest.mark.parametrize("row", EXAMPLES, ids=[row[0] for row in EXAMPLES])
def test_every_example_runs_on_its_prior_with_every_word_known(row: tuple[str, str, str, int]) -> None:
    example = dict(zip(EXAMPLE_FIELDS, row, strict=True))
    cfg = build_config(AppInputs(**example))
    assert (cfg.prompt, cfg.preset, cfg.particles) == (example["prompt"], example["preset"], example["particles"])
    folder = REPO_ROOT / example["prior"] if example["prior"] == EMBEDDED_PRIOR else Path(example["prior"])
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    assert prompt_notes(tokenizer, cfg.prompt, remedies=APP_REMEDIES) == []


def test_examples_whose_prior_is_not_offered_are_left_out() -> None:
    only_default = [("embedded", EMBEDDED_PRIOR)]
    shown = offered_examples(only_default)
    assert shown and all(row[1] == EMBEDDED_PRIOR for row in shown)
    assert len(offered_examples(find_priors(cache=Path("/nonexistent")))) == len(EXAMPLES)


def test_status_line_shows_step_eta_and_outcome(tmp_path: Path) -> None:
    state = JobState("training", tmp_path, steps=200, step=50, seconds_per_step=1.5, eta_seconds=225, elapsed=80)
    line = status_html(state)
    assert 'value="50"' in line and "step 50 / 200" in line and "1.50 s/step" in line and "ETA 3 min 45 s" in line
    done = JobState("cancelled", tmp_path, steps=200, step=50, metrics={"status": "cancelled", "cancelled_at_step": 50})
    assert "cancelled at step 50" in status_html(done) and "resume" in status_html(done)
    assert "boom" in status_html(JobState("failed", tmp_path, steps=1, message="boom"))
    noted = JobState("training", tmp_path, steps=200, notes=("the prior never saw 'glass' & co",))
    assert "Note: the prior never saw &#x27;glass&#x27; &amp; co" in status_html(noted)
    finished = JobState("done", tmp_path, steps=2, metrics={"steps": 2, "prompt_notes": ["too long"]})
    assert "Note: too long" in status_html(finished) and "Note:" not in line
    assert duration(None) == "?" and duration(59.6) == "1 min 00 s" and duration(3) == "3 s"
    Image.new("RGB", (128, 32)).save(tmp_path / "sheet.png")
    assert enlarged(tmp_path / "sheet.png").size == (512, 128) and enlarged(None) is None
    assert thumbnail(tmp_path / "sheet.png").size == (192, 192)


def _small_config(folder: Path) -> GenerateConfig:
    export = {"iso_level": 5.0, "mc_resolution": 32, "max_faces": 2000, "texture_size": 64, "turntable_frames": 4,
              "turntable_size": 16}  # fmt: skip
    small = {"grid_resolution": 16, "render_steps": 32, "preview_every": 1, "export": export}
    return GenerateConfig.from_dict({"prompt": "a red wooden cube", "prior": str(folder), "steps": 400, **small})


def _wait_for_step(job: Job, step: int) -> None:
    deadline = time.monotonic() + 120
    while job.snapshot().step < step and time.monotonic() < deadline:
        time.sleep(0.05)


def test_job_reports_progress_and_cancel_keeps_the_partial_asset(tiny_prior, tmp_path: Path) -> None:
    folder, prior = tiny_prior
    cfg = _small_config(folder)
    loads: list[str] = []
    cache = PriorCache(lambda c: loads.append(c.prior) or prior)
    board = JobBoard()
    job = Job(cfg, tmp_path / "run", cache)
    board.add("session", job)
    assert not board.cancel("someone else")
    job.start()
    _wait_for_step(job, 2)
    state = job.snapshot()
    assert state.phase == "training" and state.seconds_per_step is not None and state.eta_seconds is not None
    assert len(state.notes) == 1 and "'wooden'" in state.notes[0]  # the prior's note on the prompt reaches the page
    assert "Prior menu" in state.notes[0] and "--prior" not in state.notes[0]  # in the app's words
    assert board.running() == [job] and board.get("run") is job  # the server's job, found by its folder's name
    board.follow("reloaded page", job)  # the page came back (?run=run) in a new session
    assert board.cancel("reloaded page") and job.wait(120)
    assert board.running() == [] and not board.cancel("reloaded page")
    state = job.snapshot()
    assert state.phase == "cancelled" and state.metrics is not None, state
    k = state.metrics["cancelled_at_step"]
    assert 2 <= k < 400 and state.step == k and (tmp_path / "run" / "model.glb").is_file()
    assert (tmp_path / "run" / "previews" / "step_000001.png").is_file()
    assert list((tmp_path / "run" / "previews").glob("live_step_*.png"))  # the live mesh's views, 256 px
    assert 1 <= len(list((tmp_path / "run" / "previews").glob("live_step_*.glb"))) <= 2  # the newest two are kept

    again = Job(GenerateConfig.from_dict({**cfg.as_dict(), "steps": k + 1}), tmp_path / "run", cache).start()
    assert again.wait(120) and again.snapshot().phase == "done" and again.snapshot().resumed_from == k
    assert loads == [str(folder)]  # the prior is loaded once

    bad = Job(GenerateConfig.from_dict({**cfg.as_dict(), "preset": "vsd"}), tmp_path / "run", cache).start()
    assert bad.wait(60) and bad.snapshot().phase == "failed" and "other settings" in bad.snapshot().message


def test_a_failing_live_preview_is_turned_off_with_a_note(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("Expected all tensors to be on the same device\nmore")

    monkeypatch.setattr(live, "live_preview", broken)
    notes: list[str] = []
    previews = live.LivePreviews(tmp_path, notes.append)
    previews.maybe(None, 1)  # type: ignore[arg-type]
    previews.maybe(None, 2)  # type: ignore[arg-type]
    assert not previews.enabled and notes == [
        "live previews turned off after an error: RuntimeError: Expected all tensors to be on the same device"
    ]


def test_cancel_without_export_keeps_only_the_checkpoint_and_resumes(tiny_prior, tmp_path: Path) -> None:
    folder, prior = tiny_prior
    cfg = _small_config(folder)
    board, cache = JobBoard(), PriorCache(lambda c: prior)
    job = Job(cfg, tmp_path / "run", cache)
    board.add("session", job)
    job.start()
    _wait_for_step(job, 1)
    assert board.cancel("session", export=False)
    assert "no export" in status_html(job.snapshot()) or job.snapshot().final
    assert job.wait(120)
    state = job.snapshot()
    assert state.phase == "cancelled" and state.metrics is not None and state.metrics["exported"] is False, state
    assert "not exported" in status_html(state) and "resumes" in status_html(state)
    run = tmp_path / "run"
    assert (run / "checkpoint.pt").is_file() and not (run / "metrics.json").exists()
    assert not (run / "model.glb").exists() and run_result(run) is None  # an unfinished run, not in the gallery
    k = state.metrics["cancelled_at_step"]
    again = Job(GenerateConfig.from_dict({**cfg.as_dict(), "steps": k + 1}), run, cache).start()
    assert again.wait(120) and again.snapshot().phase == "done" and again.snapshot().resumed_from == k
    assert (run / "model.glb").is_file()


def test_a_click_while_a_run_goes_is_answered(tmp_path: Path) -> None:
    from uni3d.app.ui import App

    app = App(tmp_path, priors=[])
    assert app.before_run()[0] == ""  # nothing running: the click just clears the note
    job = Job(GenerateConfig(prompt="a red cube"), tmp_path / "a-red-cube-1234abcd", PriorCache(lambda c: None))
    app.board.add("session", job)  # registered, not started: it holds the device all the same
    note, _, status = app.before_run()
    assert "still going (a-red-cube-1234abcd" in note and 'data-phase="queued"' in status


def test_the_viewer_gets_the_newest_live_mesh_of_the_run_it_follows(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from uni3d.app.runs import latest_preview
    from uni3d.app.ui import App

    app = App(tmp_path, priors=[])
    folder = tmp_path / "a-red-cube-1234abcd"
    (folder / "previews").mkdir(parents=True)
    request = SimpleNamespace(session_hash="page")
    assert app.live_mesh(None, request)[1] is None  # the page follows no run
    job = Job(GenerateConfig(prompt="a red cube"), folder, PriorCache(lambda c: None))
    app.board.add("page", job)
    assert app.live_mesh(None, request)[1] is None  # no live mesh yet
    for name in ("step_000010.png", "live_step_000010.png", "live_step_000010.glb", "step_000020.png"):
        (folder / "previews" / name).write_bytes(b"")
    value, shown = app.live_mesh(None, request)
    assert value == shown and shown.endswith("live_step_000010.glb")
    value, again = app.live_mesh(shown, request)
    assert again == shown and not isinstance(value, str)  # the same mesh is not sent twice
    (folder / "previews" / "live_step_000020.glb").write_bytes(b"")
    assert app.live_mesh(shown, request)[0].endswith("live_step_000020.glb")
    assert latest_preview(folder).name == "step_000020.png"  # the newest step's preview, field or live
    (folder / "previews" / "live_step_000020.png").write_bytes(b"")
    assert latest_preview(folder).name == "live_step_000020.png"  # at one step the live views win
