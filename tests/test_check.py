"""METHOD.md section 6 through the CLI, and proof that the check fails when a divergence is wrong."""

from __future__ import annotations

import json

import pytest
import torch

from uni3d.checks.divergences import TABLED, check_one
from uni3d.cli.main import main
from uni3d.losses.divergences import JensenShannon


def test_cli_check_passes_and_matches_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "divergences", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["passed"] for r in rows)
    tabled = [r for r in rows if r["reference"] is not None]
    assert len(tabled) == 10  # 5 divergences x 2 forms of the METHOD.md table
    assert {r["divergence"] for r in rows} >= {"rkl", "fkl", "jeffreys", "js", "chi2", "hellinger"}
    assert len({tuple(r["case"].values()) for r in rows}) >= 4


def test_check_catches_a_wrong_coefficient(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1% error in h' of js must make the check fail (the check is not vacuous)."""
    monkeypatch.setattr(JensenShannon, "h_prime", lambda self, r: 1.01 * (r + 1).pow(-2))
    assert not check_one("js", "expanded", TABLED).passed
    assert check_one("js", "integral", TABLED).passed  # the integral form never uses h'


def test_check_catches_a_dropped_term(monkeypatch: pytest.MonkeyPatch) -> None:
    """The released code's shortcut (dropping the ratio-motion term) is detected for fkl."""
    from uni3d.losses.divergences import Divergence

    monkeypatch.setattr(Divergence, "rh_prime", lambda self, r: torch.zeros_like(r))
    assert not check_one("fkl", "expanded", TABLED).passed
    assert check_one("rkl", "expanded", TABLED).passed


def test_cli_text_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "divergences"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("passed, 0 failed")
