"""``uni3d distill --device``: one-line errors without CUDA; on a CUDA machine, a 2-step run on the GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from uni3d.cli.main import main
from uni3d.models.edm.denoiser import EDMDenoiser
from uni3d.models.edm.unet import UNetConfig
from uni3d.tasks.images.distill_config import DistillConfig
from uni3d.tasks.images.distill_run import run_distill
from uni3d.tasks.images.files import denoiser_record, load_torch, save_torch


@pytest.fixture
def teacher(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = EDMDenoiser.build(UNetConfig(channels=(8, 16), emb_dim=16, num_classes=10))
    return save_torch(tmp_path / "teacher.pt", denoiser_record(model))


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("uni3d: error:") and needle in err, err


def test_bad_devices_are_one_line_errors(teacher: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["distill", "--teacher", str(teacher), "--out", str(tmp_path / "run"), "--features", "none"]
    _one_line_error(capsys, [*argv, "--device", "tpu"], "unknown device")
    if not torch.cuda.is_available():
        _one_line_error(capsys, [*argv, "--device", "cuda"], "CUDA is not available")
        assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_two_steps_on_cuda(teacher: Path, tmp_path: Path) -> None:
    cfg = DistillConfig(
        teacher=str(teacher), preset="uni-fkl", features="none", steps=2, batch_size=4, checkpoint_every=1,
        sample_every=2, ratio_width=8, device="cuda",
    )  # fmt: skip
    row = run_distill(cfg, tmp_path / "gpu", progress=False)
    assert row["step"] == 2 and row["skipped_generator_steps"] == 0
    state = load_torch(tmp_path / "gpu" / "checkpoint.pt")
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["generator"].values())
