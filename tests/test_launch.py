"""Batches under launchers: torchrun workers and SLURM array tasks take their own shards; reports merge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TINY_GENERATE

from uni3d.cli.main import main
from uni3d.errors import UsageError
from uni3d.io import save_json
from uni3d.tasks.text_to_3d.batch import merge_reports, shard_from_env


def test_the_launcher_decides_the_shard() -> None:
    assert shard_from_env({}) is None
    assert shard_from_env({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (2, 4)
    assert shard_from_env({"RANK": "0", "WORLD_SIZE": "1"}) is None  # a world of one: the whole file
    slurm = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_COUNT": "3"}
    assert shard_from_env(slurm) == (3, 3)  # --array=5-7: task 7 is the third shard
    assert shard_from_env({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"}) == (1, 2)
    for bad in ({"RANK": "x", "WORLD_SIZE": "2"}, {"RANK": "4", "WORLD_SIZE": "2"}):
        with pytest.raises(UsageError) as err:
            shard_from_env(bad)
        assert "\n" not in str(err.value)


def _row(line: int, prompt: str) -> dict[str, object]:
    return {"line": line, "prompt": prompt, "status": "done", "folder": f"out/{prompt}", "seconds": 1.0}


def test_shard_reports_merge_in_file_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_json(tmp_path / "batch-1-of-2.json", [_row(1, "a"), _row(3, "c")])
    with pytest.raises(UsageError, match="lacks the reports of shard"):
        merge_reports(tmp_path)
    save_json(tmp_path / "batch-2-of-2.json", [_row(2, "b")])
    assert [r.prompt for r in merge_reports(tmp_path)] == ["a", "b", "c"]
    assert [r["line"] for r in json.loads((tmp_path / "batch.json").read_text())] == [1, 2, 3]
    assert main(["batch", "--merge", str(tmp_path)]) == 0
    assert "3 done, 0 skipped, 0 failed" in capsys.readouterr().out
    save_json(tmp_path / "batch-1-of-3.json", [])
    with pytest.raises(UsageError, match="different shard counts"):
        merge_reports(tmp_path)
    with pytest.raises(UsageError, match="no shard reports"):
        merge_reports(tmp_path / "empty")
    assert main(["batch", "--out", str(tmp_path)]) == 2  # no prompt file: a one-line error


def test_two_torchrun_workers_split_a_batch_and_rank_0_merges(tiny_prior, tmp_path: Path) -> None:
    folder, _ = tiny_prior
    prompts, config, out = tmp_path / "prompts.txt", tmp_path / "settings.yaml", tmp_path / "out"
    prompts.write_text("a red cube\na blue sphere\na green cone\n")
    config.write_text(yaml.safe_dump({**TINY_GENERATE, "prior": str(folder), "steps": 1}))
    argv = ["batch", str(prompts), "--out", str(out), "--config", str(config), "--quiet"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launch, "-m", "uni3d", *argv], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    shards = [json.loads((out / f"batch-{k}-of-2.json").read_text()) for k in (1, 2)]
    assert [[r["prompt"] for r in s] for s in shards] == [["a red cube", "a green cone"], ["a blue sphere"]]
    merged = json.loads((out / "batch.json").read_text())
    assert [(r["prompt"], r["status"]) for r in merged] == [
        ("a red cube", "done"),
        ("a blue sphere", "done"),
        ("a green cone", "done"),
    ]
    again = subprocess.run([*launch, "-m", "uni3d", *argv], env=env, capture_output=True, text=True, timeout=600)
    assert (
        again.returncode == 0 and [r["status"] for r in json.loads((out / "batch.json").read_text())] == ["skipped"] * 3
    )  # a re-launch skips the finished prompts
