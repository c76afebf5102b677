"""``uni3d check gpu``'s CPU-side logic: one line without a GPU; with one, every step runs and is recorded."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from uni3d.checks.gpu import run_gpu_check, steps
from uni3d.cli.main import main


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_without_a_gpu_it_says_so_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["check", "gpu", "--docs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA GPU here" in err
    assert not (tmp_path / "benchmarks").exists()  # nothing written


def test_every_step_runs_and_a_failure_does_not_stop_the_rest(tmp_path: Path) -> None:
    plan = steps(install=True, docs=tmp_path)
    assert [s.name for s in plan][:2] == ["install nerfacc", "install tinycudann"]
    assert not any(s.name.startswith("install") for s in steps(install=False, docs=tmp_path))
    seen: list[list[str]] = []

    def runner(command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        seen.append(command)
        if "tinycudann" in " ".join(command) or "tiny-cuda-nn" in " ".join(command):
            raise subprocess.TimeoutExpired(command, 1)
        return subprocess.CompletedProcess(command, 1 if "sd-step" in command else 0, "out", "err")

    rows = run_gpu_check(plan, tmp_path, runner=runner, gpu="Fake GPU")
    assert len(seen) == len(plan) == len(rows)
    assert [r["rc"] for r in rows] == [0, 124, 0, 1, 0]
    saved = json.loads((tmp_path / "benchmarks" / "gpu_check.json").read_text())
    assert saved["machine"]["gpu"] == "Fake GPU" and [r["name"] for r in saved["rows"]] == [s.name for s in plan]
    section = (tmp_path / "benchmarks.md").read_text()
    assert "| bench sd-step (sd15, sd21, fp16) | yes | 1 |" in section
