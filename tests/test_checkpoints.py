"""Checkpoints that survive damage (the last two kept, an unreadable one moved aside) and ``uni3d clean``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_GENERATE

from uni3d.checkpoints import load_checkpoint, previous, save_checkpoint
from uni3d.cli.main import main
from uni3d.tasks.text_to_3d.config import GenerateConfig

pytestmark = pytest.mark.usefixtures("one_thread")


class _Code:
    """An object the safe unpickler refuses (a checkpoint that carries code)."""


def _load(path: Path) -> tuple[dict | None, list[str]]:
    notes: list[str] = []
    return load_checkpoint(path, map_location="cpu", required="step", log=notes.append), notes


def test_the_previous_checkpoint_is_kept_and_taken_when_the_last_is_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    for step in (1, 2):
        save_checkpoint(path, {"step": step, "w": torch.full((1000,), float(step))})
    assert _load(path)[0]["step"] == 2 and torch.load(previous(path))["step"] == 1
    path.write_bytes(path.read_bytes()[:500])  # a copy interrupted, a full disk
    state, notes = _load(path)
    assert state["step"] == 1 and len(notes) == 1 and "checkpoint.pt cannot be read" in notes[0]
    assert (tmp_path / "checkpoint.pt.damaged").is_file() and not path.exists()


def test_a_refused_pickle_is_moved_aside_and_nothing_left_means_a_fresh_start(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    torch.save({"step": 3, "payload": _Code()}, path)
    previous(path).write_bytes(b"")
    state, notes = _load(path)
    assert state is None and len(notes) == 2 and "\n" not in "".join(notes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt.damaged", "checkpoint.pt.damaged"]
    torch.save({"other": 1}, path)  # readable, but not a checkpoint of this kind
    assert _load(path)[0] is None and (tmp_path / "checkpoint.pt.damaged-2").is_file()


def test_a_run_with_a_damaged_checkpoint_resumes_from_the_one_before(tiny_prior, tmp_path: Path) -> None:
    from uni3d.tasks.text_to_3d.run import generate

    folder, prior = tiny_prior
    settings = {"prompt": "a red cube", "prior": str(folder), **TINY_GENERATE, "checkpoint_every": 1}
    cfg = GenerateConfig.from_dict(settings)
    steps: list[int] = []
    generate(cfg, tmp_path, prior=prior, progress=False, callback=lambda k, _: steps.append(k),
             should_stop=lambda: len(steps) == 2)  # fmt: skip
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "cancelled"
    assert torch.load(previous(tmp_path / "checkpoint.pt"))["step"] == 1
    (tmp_path / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    logs: list[str] = []
    metrics = generate(cfg, tmp_path, prior=prior, progress=False, log=logs.append)
    assert metrics["status"] == "done" and metrics["resumed_from_step"] == 1 and metrics["steps"] == 3
    assert any("cannot be read" in line for line in logs) and (tmp_path / "checkpoint.pt.damaged").is_file()
    assert not previous(tmp_path / "checkpoint.pt").exists()  # a finished run keeps one checkpoint


def test_clean_drops_only_the_checkpoints_of_finished_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, status in (("done", "done"), ("cancelled", "cancelled"), ("running", None)):
        run = tmp_path / "runs" / name
        save_checkpoint(run / "checkpoint.pt", {"step": 1})
        save_checkpoint(run / "checkpoint.pt", {"step": 2})
        if status is not None:
            (run / "metrics.json").write_text(json.dumps({"status": status}))
    assert main(["clean", str(tmp_path / "runs"), "--dry-run"]) == 0
    assert "2 checkpoint(s) of finished runs, would free" in capsys.readouterr().out
    assert (tmp_path / "runs" / "done" / "checkpoint.pt").is_file()
    assert main(["clean", str(tmp_path / "runs")]) == 0
    left = sorted(str(p.relative_to(tmp_path / "runs")) for p in (tmp_path / "runs").rglob("checkpoint*.pt"))
    assert left == [
        f"{run}/{name}" for run in ("cancelled", "running") for name in ("checkpoint.prev.pt", "checkpoint.pt")
    ]
    assert "freed" in capsys.readouterr().out
