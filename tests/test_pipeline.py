"""Text to 3D on a tiny random Stable Diffusion folder (offline, CPU): runs, resume, rollback, batch, CLI errors."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import trimesh
from conftest import TINY_GENERATE

from uni3d.cli.main import main
from uni3d.errors import UsageError
from uni3d.io import save_json
from uni3d.models.views import camera_angles
from uni3d.scene.cameras import orbit_cameras
from uni3d.tasks.text_to_3d.batch import format_summary, parse_shard, read_prompts, run_batch, select_shard
from uni3d.tasks.text_to_3d.config import GenerateConfig

SMALL: dict[str, Any] = TINY_GENERATE


def _cfg(folder: Path, **changes: Any) -> GenerateConfig:
    return GenerateConfig.from_dict({"prompt": "a red cube", "prior": str(folder), **SMALL, **changes})


def _glb_mesh(path: Path) -> trimesh.Trimesh:
    mesh = trimesh.load(path, force="mesh")
    assert len(mesh.faces) > 0 and np.isfinite(mesh.vertices).all()
    return mesh


@pytest.mark.parametrize("preset", ["sds", "vsd", "uni-jeffreys"])
def test_generate_writes_a_finite_asset(tiny_prior, tmp_path: Path, preset: str) -> None:
    from uni3d.tasks.text_to_3d.run import generate
    from uni3d.tasks.text_to_3d.trainer import TextTo3D

    folder, prior = tiny_prior
    out = tmp_path / preset
    metrics = generate(_cfg(folder, preset=preset), out, prior=prior, progress=False)
    assert metrics["status"] == "done" and metrics["steps"] == 3 and metrics["rollbacks"] == 0
    assert math.isfinite(metrics["loss_first"]) and math.isfinite(metrics["loss_last"])
    assert metrics["render_size"] == metrics["prior_image_size"] == 16
    _glb_mesh(out / "model.glb")
    _glb_mesh(out / "model_vertex_color.glb")
    for name in ("model.obj", "preview.png", "previews/step_000002.png", "contact_sheet.png", metrics["files"][3]):
        assert (out / name).is_file(), name
    assert not list((out / "previews").glob("live_*"))  # live meshes are the app's (generate(live_previews=True))
    saved = GenerateConfig.from_dict(json.loads((out / "config.json").read_text()))
    assert saved.t_min == (0.2 if preset == "uni-jeffreys" else 0.02) and saved.render_size == 16
    assert metrics["ratio_evaluations"] == (3 if preset == "uni-jeffreys" else 0)
    assert metrics["prompt_notes"] == []
    assert json.loads((out / "metrics.json").read_text()) == metrics
    torch.manual_seed(0)  # the run's seed: the same initial field as the run's
    initial = TextTo3D(GenerateConfig.from_dict(json.loads((out / "config.json").read_text())), prior).renderer
    trained = _state(out)["renderer"]
    assert any(not torch.equal(trained[k], v) for k, v in initial.state_dict().items()), "the field never changed"


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_fake_score_guided_like_the_teacher_starts_equal_to_it(tiny_prior, scale: float) -> None:
    """LoRA and camera embedding start at zero, so with the teacher's guidance the fake score is the teacher."""
    from uni3d.tasks.text_to_3d.trainer import TextTo3D

    folder, prior = tiny_prior
    cfg = _cfg(folder, preset="uni-rkl", guidance_scale=scale, fake_guidance_scale=scale).resolved(16)
    trainer = TextTo3D(cfg, prior)
    unet = prior.unet.config
    x = torch.randn(2, unet.in_channels, unet.sample_size, unet.sample_size, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.5, 2.0])
    cams = trainer.sampler.sample(2, 16)
    cond, uncond = trainer.conditions(cams)
    with torch.no_grad():
        d_fake = trainer.fake_denoise(x, sigma, cond, uncond, cams.c2w)
        d_teacher = prior.denoise(x, sigma, cond, uncond, scale)
        d_unguided = prior.denoise(x, sigma, cond, uncond, 1.0)
    assert torch.allclose(d_fake, d_teacher, atol=1e-5)
    assert scale == 1.0 or not torch.allclose(d_fake, d_unguided, atol=1e-3)
    assert trainer.fake.mid_features.shape[0] == 2  # the ratio head reads the prompt-conditioned pass


@pytest.mark.parametrize("teacher_jacobian", [False, True])
def test_teacher_jacobian_setting_decides_whether_the_teacher_is_differentiated(
    tiny_prior, monkeypatch: pytest.MonkeyPatch, teacher_jacobian: bool
) -> None:
    """uni-rkl: the fake score always runs on the live input; the teacher only with ``teacher_jacobian``."""
    from uni3d.tasks.text_to_3d.trainer import TextTo3D

    folder, prior = tiny_prior
    trainer = TextTo3D(_cfg(folder, preset="uni-rkl", teacher_jacobian=teacher_jacobian).resolved(16), prior)
    live: dict[str, list[bool]] = {"teacher": [], "fake": []}
    teacher_denoise, fake_denoise = prior.denoise, trainer.fake_denoise

    def spy(name: str, fn: Any) -> Any:
        def wrapped(x: torch.Tensor, *args: Any) -> torch.Tensor:
            out = fn(x, *args)
            live[name].append(out.requires_grad)
            return out

        return wrapped

    monkeypatch.setattr(prior, "denoise", spy("teacher", teacher_denoise))
    monkeypatch.setattr(trainer, "fake_denoise", spy("fake", fake_denoise))
    assert trainer.train_step() is not None
    assert live == {"teacher": [teacher_jacobian], "fake": [True]}


@pytest.mark.parametrize("ratio_motion", [False, True])
def test_ratio_motion_setting_decides_whether_the_ratio_moves(tiny_prior, ratio_motion: bool) -> None:
    """Without ratio_motion every sample's ratio is a constant weight; with it, the head's unclamped samples move."""
    from uni3d.tasks.text_to_3d.trainer import TextTo3D

    folder, prior = tiny_prior
    trainer = TextTo3D(_cfg(folder, preset="uni-jeffreys", ratio_motion=ratio_motion).resolved(16), prior)
    channels = trainer.head.net[0].in_features - 1
    features, sigma = torch.randn(3, channels, 2, 2), torch.tensor([0.5, 1.0, 2.0])
    est = trainer.ratio_estimate(features, sigma)
    assert est.moves.tolist() == [ratio_motion] * 3  # the fresh head's logits are small: inside the clamp
    assert est.log_r.abs().max() < trainer.cfg.ratio_clamp


def _state(path: Path) -> dict[str, Any]:
    return torch.load(path / "checkpoint.pt")


def test_resume_continues_and_matches_the_uninterrupted_run(tiny_prior, tmp_path: Path) -> None:
    from uni3d.tasks.text_to_3d.run import generate

    folder, prior = tiny_prior
    cfg = _cfg(folder, preset="uni-jeffreys", steps=4)
    generate(cfg, tmp_path / "whole", prior=prior, progress=False)

    def interrupt(step: int, stats: object) -> None:
        if step == 3:
            raise KeyboardInterrupt

    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        generate(cfg, part, prior=prior, progress=False, callback=interrupt)
    assert _state(part)["step"] == 2 and not (part / "metrics.json").exists()
    with pytest.raises(UsageError, match="other settings") as err:
        generate(_cfg(folder, preset="uni-jeffreys", steps=4, seed=1), part, prior=prior, progress=False)
    assert "\n" not in str(err.value)
    metrics = generate(cfg, part, prior=prior, progress=False)
    assert metrics["resumed_from_step"] == 2 and metrics["steps"] == 4
    whole, resumed = _state(tmp_path / "whole"), _state(part)
    assert resumed["losses"] == pytest.approx(whole["losses"], rel=1e-5, abs=1e-6)
    for key in ("renderer", "fake", "head"):
        for name, value in whole[key].items():
            torch.testing.assert_close(resumed[key][name], value, rtol=1e-5, atol=1e-6, msg=f"{key}.{name}")
    torch.testing.assert_close(resumed["bank"]["latents"], whole["bank"]["latents"])
    again = generate(cfg, part, prior=prior, progress=False)  # finished: returned, not run again
    assert again == metrics
    with pytest.raises(UsageError, match="other settings"):  # never taken for a run with other settings
        generate(_cfg(folder, preset="vsd", steps=4), part, prior=prior, progress=False)


def test_a_bank_saved_with_angles_resumes_with_a_field_of_view() -> None:
    """Checkpoints before 2026-12-05 kept each bank sample's elevation and azimuth; the cameras' fields of view,
    which the angles view scheme needs, are then taken as the run's middle one."""
    from uni3d.tasks.text_to_3d.bank import TeacherBank

    c2w = orbit_cameras(2, elevation_deg=20.0).c2w
    old = {
        "latents": torch.zeros(2, 4, 8, 8),
        "c2w": c2w,
        "elevation": torch.full((2,), 20.0),
        "azimuth": torch.zeros(2),
    }
    bank = TeacherBank.from_state(old, 0.7)
    torch.testing.assert_close(bank.fov_y, torch.full((2,), 0.7))
    elevation, _ = camera_angles(bank.cameras(torch.tensor([1])))
    torch.testing.assert_close(elevation, torch.tensor([20.0]))
    again = TeacherBank.from_state(asdict(bank), 0.1)  # a current checkpoint keeps its own
    assert all(torch.equal(getattr(again, k), getattr(bank, k)) for k in ("latents", "c2w", "fov_y"))


def test_a_partial_nested_setting_changes_only_what_it_names() -> None:
    default = GenerateConfig(prompt="a red cube")
    cfg = GenerateConfig.from_dict({"prompt": "a red cube", "field": {"blob_radius": 0.2, "encoding": {"n_levels": 4}}})
    encoding = dataclasses.replace(default.field.encoding, n_levels=4)
    assert cfg.field == dataclasses.replace(default.field, blob_radius=0.2, encoding=encoding)
    assert cfg.field.hidden == default.field.hidden == 32  # the small text-to-3D field, not FieldConfig()'s 64
    assert GenerateConfig.from_dict({"prompt": "x", "export": {"max_faces": 500}}).export.texture_size == (
        default.export.texture_size
    )


def test_runs_made_before_the_3d_gradient_settings_existed(tmp_path: Path) -> None:
    """A saved config without teacher_jacobian / ratio_motion still matches where they are inert for its preset."""
    from uni3d.tasks.text_to_3d.run import _check_resumable

    def without(config: dict[str, Any], *names: str) -> dict[str, Any]:
        return {k: v for k, v in config.items() if k not in names}

    sds = GenerateConfig(prompt="a red cube", preset="sds").as_dict()
    assert GenerateConfig.from_dict(sds).inert_settings() == {"teacher_jacobian", "ratio_motion"}
    _check_resumable(without(sds, "teacher_jacobian", "ratio_motion"), sds, tmp_path)
    rkl = GenerateConfig(prompt="a red cube", preset="uni-rkl").as_dict()
    assert GenerateConfig.from_dict(rkl).inert_settings() == {"ratio_motion"}
    _check_resumable(without(rkl, "ratio_motion"), rkl, tmp_path)
    with pytest.raises(UsageError, match="teacher_jacobian: None -> False"):  # made with the exact form
        _check_resumable(without(rkl, "teacher_jacobian", "ratio_motion"), rkl, tmp_path)
    jeffreys = GenerateConfig(prompt="a red cube", preset="uni-jeffreys").as_dict()
    assert GenerateConfig.from_dict(jeffreys).inert_settings() == set()
    _check_resumable(without(jeffreys, "particles", "particles_per_step"), jeffreys, tmp_path)  # one particle
    with pytest.raises(UsageError, match="particles: 1 -> 2"):
        _check_resumable(without(jeffreys, "particles"), {**jeffreys, "particles": 2}, tmp_path)


def test_should_stop_cancels_cleanly_keeps_the_partial_asset_and_resumes(tiny_prior, tmp_path: Path) -> None:
    from uni3d.tasks.text_to_3d.run import finished_metrics, generate

    folder, prior = tiny_prior
    cfg = _cfg(folder, steps=4, checkpoint_every=3)
    seen: list[int] = []
    out = tmp_path / "cancel"
    metrics = generate(
        cfg,
        out,
        prior=prior,
        progress=False,
        callback=lambda step, _: seen.append(step),
        should_stop=lambda: seen[-1] >= 2,
    )
    assert seen == [1, 2] and metrics["status"] == "cancelled" and metrics["cancelled_at_step"] == 2
    assert metrics["steps"] == 2 and json.loads((out / "metrics.json").read_text()) == metrics
    assert _state(out)["step"] == 2  # saved on cancel, though checkpoint_every is 3
    _glb_mesh(out / "model.glb")
    assert finished_metrics(cfg, out) is None  # a cancelled run is not finished: the same command resumes it
    again = generate(cfg, out, prior=prior, progress=False)
    assert again["status"] == "done" and again["resumed_from_step"] == 2 and again["steps"] == 4
    assert "cancelled_at_step" not in again


def test_nonfinite_loss_is_rolled_back_and_reported(
    tiny_prior, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uni3d.engine.loop as loop_mod
    from uni3d.engine import NonFiniteError
    from uni3d.tasks.text_to_3d.run import generate

    folder, prior = tiny_prior
    real = loop_mod.generator_loss
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * math.nan if calls["n"] == 2 else loss

    monkeypatch.setattr(loop_mod, "generator_loss", flaky)
    out = tmp_path / "nan"
    metrics = generate(_cfg(folder, preset="vsd"), out, prior=prior, progress=False)
    assert metrics["rollbacks"] == 1 and metrics["nonfinite_steps"] == [2] and metrics["steps"] == 3
    assert calls["n"] == 5  # rolled back to the snapshot at step 0, then steps 1-3 again
    assert all(torch.isfinite(v).all() for v in _state(out)["renderer"].values() if v.is_floating_point())
    _glb_mesh(out / "model.glb")

    monkeypatch.setattr(loop_mod, "generator_loss", lambda *a, **k: real(*a, **k) * math.nan)
    with pytest.raises(NonFiniteError, match="diverged"):
        generate(_cfg(folder, preset="sds", max_rollbacks=2), tmp_path / "bad", prior=prior, progress=False)
    assert not (tmp_path / "bad" / "model.glb").exists() and not (tmp_path / "bad" / "metrics.json").exists()


def test_generate_command_end_to_end(tiny_prior, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = tiny_prior
    config = tmp_path / "small.json"
    save_json(config, {**SMALL, "steps": 2})
    out = tmp_path / "cli"
    argv = ["generate", "a blue glass sphere", "--prior", str(folder), "--config", str(config), "--out", str(out)]
    assert main([*argv, "--preset", "sds", "--seed", "3", "--json"]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert printed["steps"] == 2 and printed["prompt"] == "a blue glass sphere" and printed["out"] == str(out)
    (note,) = printed["prompt_notes"]  # the tiny prior has the caption tokenizer: "glass" is unknown to it
    assert "never saw the word(s) 'glass'" in note and f"note: {note}" in captured.err
    assert json.loads((out / "config.json").read_text())["seed"] == 3
    _glb_mesh(out / "model.glb")


# ---- batch ----------------------------------------------------------------------------------------------------


def _fake_generate(calls: list[str]):
    def generate(cfg: GenerateConfig, out: Path, prior: object = None, progress: bool = True, **_: Any) -> dict:
        calls.append(cfg.prompt)
        if cfg.prompt == "boom":
            raise RuntimeError("exploded\nwith a second line")
        metrics = {"status": "done", "steps": cfg.steps, "rollbacks": 0}
        save_json(Path(out) / "config.json", cfg.as_dict())
        save_json(Path(out) / "metrics.json", metrics)
        return metrics

    return generate


def test_batch_skips_finished_records_failures_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uni3d.tasks.text_to_3d.run as run_mod

    calls: list[str] = []
    monkeypatch.setattr(run_mod, "generate", _fake_generate(calls))
    monkeypatch.setattr(run_mod, "load_prior", lambda cfg: object())
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(
        "# benchmark\na red cube\n\n  a blue sphere   # inline comment\nboom\na red cube\na green torus\n"
    )
    out = tmp_path / "out"
    rows = run_batch(prompts, out, {"steps": 2, "prior": "some/prior"}, progress=False)
    assert [(r.line, r.prompt, r.status) for r in rows] == [
        (2, "a red cube", "done"),
        (4, "a blue sphere", "done"),
        (5, "boom", "failed"),
        (7, "a green torus", "done"),
    ]
    assert rows[2].error == "RuntimeError: exploded" and "Traceback" in (Path(rows[2].folder) / "error.txt").read_text()
    assert calls == ["a red cube", "a blue sphere", "boom", "a green torus"]
    assert json.loads((out / "batch.json").read_text())[2]["status"] == "failed"

    calls.clear()
    assert main(["batch", str(prompts), "--out", str(out), "--prior", "some/prior", "--quiet"]) == 1
    assert calls == ["boom"]  # finished prompts skipped, the failed one retried
    table = capsys.readouterr().out
    assert "0 done, 3 skipped, 1 failed" in table and "error: RuntimeError: exploded" in table
    assert format_summary(rows).splitlines()[0].split() == ["line", "status", "seconds", "steps", "rollb", "prompt"]

    calls.clear()  # the same folders with another preset: reported as failures, never skipped as finished
    rows = run_batch(prompts, out, {"steps": 2, "prior": "some/prior", "preset": "vsd"}, progress=False)
    assert [r.status for r in rows] == ["failed"] * 4 and calls == ["boom"]
    assert "other settings" in (rows[0].error or "") and "\n" not in (rows[0].error or "")


def test_shards_partition_the_prompt_file(tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt number {i}\n" for i in range(10)))
    lines = read_prompts(prompts)
    parts = [select_shard(lines, k, 3) for k in (1, 2, 3)]
    assert sorted((p for part in parts for p in part), key=lambda p: p.line) == lines
    assert [len(p) for p in parts] == [4, 3, 3] and parts[1][0].prompt == "prompt number 1"
    assert parse_shard("2/3") == (2, 3) and parse_shard(None) == (1, 1)
    for bad in ("0/2", "3/2", "x", "2", "/3", "1/0"):
        with pytest.raises(UsageError, match="--shard") as err:
            parse_shard(bad)
        assert "\n" not in str(err.value)


# ---- one-line errors ------------------------------------------------------------------------------------------


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("uni3d: error:") and needle in err, err


def test_bad_input_gives_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ["--out", str(tmp_path / "run")]
    _one_line_error(capsys, ["generate", "   ", *out], "prompt is empty")
    _one_line_error(capsys, ["generate", "a cube", "--preset", "nope", *out], "unknown preset")
    _one_line_error(capsys, ["generate", "a cube", "--preset", "dmd", *out], "teacher ODE samples")
    _one_line_error(capsys, ["generate", "a cube", "--prior", str(tmp_path / "missing"), *out], "no such folder")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"a red cube\n# fine\n\xff\xfe broken\n")
    _one_line_error(capsys, ["batch", str(bad), *out], "bad.txt:3:")
    good = tmp_path / "good.txt"
    good.write_text("a red cube\n")
    _one_line_error(capsys, ["batch", str(good), "--shard", "3/2", *out], "--shard")
    _one_line_error(capsys, ["batch", str(tmp_path / "none.txt"), *out], "cannot read prompt file")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    _one_line_error(capsys, ["batch", str(empty), *out], "holds no prompts")
    _one_line_error(capsys, ["batch", str(good), "--preset", "uni-nope", *out], "unknown preset")


def test_missing_embedded_prior_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uni3d.tasks.text_to_3d.config as config_mod

    monkeypatch.setattr(config_mod, "REPO_ROOT", tmp_path)
    _one_line_error(capsys, ["generate", "a red cube", "--out", str(tmp_path / "run")], "uni3d train-prior")


def test_memory_options_reach_the_prior_and_a_resumed_run_may_change_them(tiny_prior, tmp_path: Path) -> None:
    from uni3d.cli.main import build_parser
    from uni3d.cli.text_to_3d import settings_from_args
    from uni3d.tasks.text_to_3d.run import MEMORY_OPTIONS, _check_resumable, load_prior

    folder, _ = tiny_prior
    flags = ["--attention-slicing", "--channels-last", "--vae-slicing"]
    settings = settings_from_args(build_parser().parse_args(["generate", "a red cube", "--prior", str(folder), *flags]))
    assert {name: settings[name] for name in MEMORY_OPTIONS} == dict.fromkeys(MEMORY_OPTIONS, True)
    prior = load_prior(GenerateConfig.from_dict({**settings, "prompt": "a red cube", "device": "cpu"}))
    assert prior.vae.use_slicing
    assert {type(p).__name__ for p in prior.unet.attn_processors.values()} == {"SlicedAttnProcessor"}
    assert prior.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    plain = load_prior(GenerateConfig(prompt="a red cube", prior=str(folder), device="cpu"))
    assert not plain.vae.use_slicing and plain.unet.conv_in.weight.is_contiguous()
    saved = {k: v for k, v in GenerateConfig(prompt="a red cube").as_dict().items() if k not in MEMORY_OPTIONS}
    _check_resumable(saved, GenerateConfig(prompt="a red cube", vae_slicing=True).as_dict(), tmp_path)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"steps": "ten"}, "generate setting 'steps' must be an integer, got 'ten'"),
        ({"steps": 2.5}, "'steps' must be an integer"),
        ({"view_dependent": 1}, "'view_dependent' must be true or false"),
        ({"field": {"blob_radius": "x"}}, "generate.field setting 'blob_radius' must be a number"),
        ({"elevation_deg": [1, 2, 3]}, "'elevation_deg' must hold 2 values"),
        ({"t_min": "low"}, "'t_min' must be a number"),
    ],
)
def test_a_setting_of_the_wrong_type_is_a_one_line_error_naming_it(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        GenerateConfig.from_dict({"prompt": "a red cube", **settings})


def test_settings_of_the_right_type_pass_and_integers_become_floats() -> None:
    cfg = GenerateConfig.from_dict({"prompt": "x", "guidance_scale": 7, "t_min": None, "elevation_deg": [0, 30]})
    assert (cfg.guidance_scale, cfg.t_min, cfg.elevation_deg) == (7.0, None, (0.0, 30.0))
    assert isinstance(cfg.guidance_scale, float) and GenerateConfig.from_dict(cfg.as_dict()) == cfg
