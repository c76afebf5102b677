"""``uni3d bench fake-bias`` on the tiny offline prior: rows at the asked steps, RNG of the run untouched."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from uni3d.bench.fake_bias import measure, residual_alignment
from uni3d.cli.main import main
from uni3d.tasks.text_to_3d.config import GenerateConfig


def _cfg(folder: Path, **changes: object) -> GenerateConfig:
    small = {"recipe": "embedded", "steps": 3, "grid_resolution": 16, "render_steps": 32, "bank_size": 2, "bank_nfe": 3}
    return GenerateConfig.from_dict({"prompt": "a red cube", "prior": str(folder), **small, **changes})


def test_measure_reports_cosines_at_the_asked_steps(tiny_prior) -> None:
    folder, prior = tiny_prior
    rows = measure(_cfg(folder, preset="uni-jeffreys", fake_guidance_scale=2.0), every=2, draws=3, prior=prior)
    assert [r["step"] for r in rows] == [0, 2, 3]
    for r in rows:
        assert -1 <= r["cos_mean"] <= 1 and math.isfinite(r["cos_mean"])
        assert any(r["positive"] == pytest.approx(share) for share in (0, 1 / 3, 2 / 3, 1))  # a float32 mean


def test_residual_alignment_leaves_the_run_rng_alone(tiny_prior) -> None:
    from uni3d.tasks.text_to_3d.trainer import TextTo3D

    folder, prior = tiny_prior
    trainer = TextTo3D(_cfg(folder, preset="vsd").resolved(16), prior)
    before = torch.get_rng_state()
    first = residual_alignment(trainer, draws=2)
    assert torch.equal(torch.get_rng_state(), before)
    assert residual_alignment(trainer, draws=2) == first  # its own seed: the same draws again


def test_presets_without_a_fake_score_are_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    for preset in ("sds", "asd"):  # asd's fake score is the frozen prior: nothing learned to measure
        assert main(["bench", "fake-bias", "--preset", preset]) == 2
        assert "has no fake score" in capsys.readouterr().err
