"""``uni3d bench teacher-jacobian`` on the tiny offline prior: the split is right where the answer is known."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from uni3d.bench.teacher_jacobian import _section, jacobian_split, measure
from uni3d.cli.main import main
from uni3d.tasks.text_to_3d.config import GenerateConfig


def _cfg(folder: Path, **changes: object) -> GenerateConfig:
    small = {"steps": 2, "grid_resolution": 16, "render_steps": 32, "bank_size": 2, "bank_nfe": 3}
    return GenerateConfig.from_dict({"prompt": "a red cube", "prior": str(folder), **small, **changes})


def test_a_teacher_without_jacobian_changes_nothing_and_a_real_one_does(tiny_prior, monkeypatch) -> None:
    from uni3d.tasks.text_to_3d.trainer import TextTo3D

    folder, prior = tiny_prior
    trainer = TextTo3D(_cfg(folder, preset="uni-rkl").resolved(16), prior)
    rows = jacobian_split(trainer, draws=3)
    assert all(math.isfinite(v) for r in rows for v in r.values())
    assert any(abs(r["norm_ratio"] - 1) > 1e-3 for r in rows)  # the tiny teacher's Jacobian is not zero
    denoise = prior.denoise
    # A teacher whose output does not depend on its input (same values, zero Jacobian): exact = without.
    monkeypatch.setattr(prior, "denoise", lambda x, *a: denoise(x.detach(), *a) + 0 * x.sum())
    for r in jacobian_split(trainer, draws=3):
        assert r["norm_ratio"] == pytest.approx(1, abs=1e-6) and r["cos_exact"] == pytest.approx(r["cos_without"])


def test_measure_reports_every_step_and_its_section(tiny_prior) -> None:
    folder, prior = tiny_prior
    cfg = _cfg(folder, preset="uni-jeffreys")
    rows = measure(cfg, every=1, draws=2, prior=prior)
    assert [r["step"] for r in rows] == [0, 1, 2] and all(len(r["draws"]) == 2 for r in rows)
    assert -1 <= rows[0]["cos_exact_min"] <= rows[0]["cos_exact_median"] <= 1
    info = {"cpu": "cpu", "cores": 2, "torch": torch.__version__, "date": "today"}
    text = _section(cfg.as_dict(), rows, info, "uni3d bench teacher-jacobian")
    assert text.count("\n| 2 | ") == 1 and "over 2 draws" in text and "teacher_jacobian=False" in text


def test_presets_that_never_differentiate_the_teacher_are_a_one_line_error(capsys) -> None:
    assert main(["bench", "teacher-jacobian", "--preset", "vsd"]) == 2
    assert "never differentiates the teacher" in capsys.readouterr().err
