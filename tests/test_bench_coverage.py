"""The coverage benchmark's measures: total variation, its null, and the shipped prior's own answer to a prompt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
import yaml
from conftest import TINY_GENERATE

from uni3d.bench.coverage import (
    asset_outcome,
    distribution,
    null_tv,
    prior_outcomes,
    settings_label,
    total_variation,
)
from uni3d.tasks.embedded_prior.classifier import load_classifier
from uni3d.tasks.embedded_prior.primitives import COLOURS
from uni3d.tasks.text_to_3d.config import GenerateConfig

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "priors"

pytestmark = pytest.mark.usefixtures("one_thread")


def test_total_variation_and_its_null() -> None:
    cube, cone = ("cube", "red"), ("cone", "red")
    assert total_variation(distribution([cube, cone]), distribution([cone, cube, cube, cone])) == 0.0
    assert total_variation(distribution([cube]), distribution([cone])) == 1.0
    assert total_variation(distribution([cube, cube, cube, cone]), distribution([cone, cone])) == pytest.approx(0.75)
    assert null_tv([cube] * 10, 4) == (0.0, 0.0)  # a prior that always answers the same: any draw matches it
    mean, p95 = null_tv([cube, cone] * 50, 16, resamples=500)
    assert 0.05 < mean < 0.2 and mean <= p95 <= 0.4  # 16 draws of a fair coin: TV = |k/16 - 1/2|
    assert null_tv([cube, cone] * 50, 16, resamples=500) == (mean, p95)  # seeded
    assert null_tv([cube, cone] * 50, 64, resamples=500)[0] < mean  # more outcomes, a tighter null


def test_the_shipped_prior_answers_a_specified_prompt_with_it() -> None:
    cfg = GenerateConfig(prompt="a red cube")
    outcomes = prior_outcomes(
        ASSETS / "shapes",
        load_classifier(ASSETS / "shapes-classifier.pt")[0],
        "a red cube",
        8,
        cfg=cfg,
        steps=10,
        seed=0,
    )
    assert len(outcomes) == 8 and outcomes.count(("cube", "red")) >= 6


@pytest.mark.parametrize(
    ("shape", "colour", "mesh"),
    [
        ("cube", "red", lambda: trimesh.creation.box(extents=(0.8, 0.8, 0.8))),
        ("sphere", "blue", lambda: trimesh.creation.icosphere(subdivisions=3, radius=0.5)),
    ],
)
def test_an_exported_asset_is_judged_on_its_renders(tmp_path: Path, shape: str, colour: str, mesh) -> None:
    solid = mesh()
    solid.visual.vertex_colors = np.append(np.array(COLOURS[colour]) * 255, 255).astype(np.uint8)
    solid.export(tmp_path / "model_vertex_color.glb")
    cfg = GenerateConfig(prompt="a red object")
    judge, _ = load_classifier(ASSETS / "shapes-classifier.pt")
    assert asset_outcome(tmp_path, judge, cfg=cfg) == (shape, colour)


def test_bench_coverage_writes_rows_pictures_and_json(tiny_prior, tmp_path: Path) -> None:
    from uni3d.cli.main import main
    from uni3d.tasks.embedded_prior.classifier import ClassifierReport, ShapeClassifier, save_classifier

    folder, _ = tiny_prior
    judge = save_classifier(ShapeClassifier(width=8), ClassifierReport(0.0, 0.0, 0), tmp_path / "judge.pt")
    prompts, config, docs = tmp_path / "prompts.txt", tmp_path / "settings.yaml", tmp_path / "docs"
    prompts.write_text("a red object\n")
    sampling = {"noise": "fresh", "t_schedule": "uniform"}  # two particles default to seeded noise, descending t
    config.write_text(yaml.safe_dump({**TINY_GENERATE, "prior": str(folder), **sampling}))
    argv = ["bench", "coverage", "--prompts", str(prompts), "--presets", "sds,vsd", "--particles", "2", "--seeds", "1"]
    argv += [
        "--prior-samples",
        "4",
        "--config",
        str(config),
        "--classifier",
        str(judge),
        "--out",
        str(tmp_path / "runs"),
    ]
    assert main([*argv, "--docs", str(docs)]) == 0
    rows = json.loads((docs / "benchmarks" / "coverage.json").read_text())["rows"]
    assert [(r["prompt"], r["preset"], r["outcomes"]) for r in rows] == [
        ("a red object", "sds", 2),
        ("a red object", "vsd", 2),
    ]
    for r in rows:
        assert (
            0 <= r["tv"] <= 1
            and 0 <= r["null_mean"] <= r["null_p95"] <= 1
            and r["inside_null"] == (r["tv"] <= r["null_p95"])
        )
        assert (
            sum(r["outcome_counts"].values()) == 2 and sum(r["prior_counts"].values()) == 4 and 1 <= r["distinct"] <= 2
        )
        assert r["cpu_per_outcome"] > 0 and (docs / r["sheet"]).is_file()
    assert (docs / "benchmarks.md").read_text().count("<!-- coverage:begin -->") == 1
    assert main([*argv, "--docs", str(docs)]) == 0  # the finished runs are read back, with their recorded CPU time
    again = json.loads((docs / "benchmarks" / "coverage.json").read_text())["rows"]
    assert [r["cpu_per_outcome"] for r in again] == [r["cpu_per_outcome"] for r in rows]
    config.write_text(
        yaml.safe_dump({**TINY_GENERATE, "prior": str(folder), "noise": "seeded", "t_schedule": "descending"})
    )
    assert main([*argv[:5], "sds", *argv[6:], "--docs", str(docs)]) == 0  # another sampling: rows added, none lost
    merged = json.loads((docs / "benchmarks" / "coverage.json").read_text())["rows"]
    assert [(r["preset"], r["sampling"]) for r in merged] == [
        ("sds", "fresh-uniform"),
        ("vsd", "fresh-uniform"),
        ("sds", "seeded-descending"),
    ]
    assert all(r["command"] and r["machine"] for r in merged)  # each row says how and where it was measured
    assert (docs / "benchmarks.md").read_text().count("| seeded-descending |") == 1
    given = {**TINY_GENERATE, "prior": str(folder)}
    # a learned preset's row names its fake estimator (the default for two particles: the particles' own)
    assert {(r["preset"], r["settings"]) for r in merged} == {
        ("sds", settings_label(given)),
        ("vsd", settings_label({**given, "fake_estimator": "particles"})),
    }
    config.write_text(yaml.safe_dump({**TINY_GENERATE, "prior": str(folder), "lora_t_schedule": "generator"}))
    assert main([*argv[:5], "vsd", *argv[6:], "--docs", str(docs)]) == 0  # other settings: a row of their own
    rows = json.loads((docs / "benchmarks" / "coverage.json").read_text())["rows"]
    assert [(r["preset"], r["sampling"]) for r in rows] == [
        ("sds", "fresh-uniform"),
        ("vsd", "fresh-uniform"),
        ("sds", "seeded-descending"),
        ("vsd", "seeded-descending"),
    ]
    assert "lora_t_schedule: generator" in rows[-1]["settings"] and "prior: " + folder.name in rows[-1]["settings"]
    assert "lora_t_schedule: generator" in (docs / "benchmarks.md").read_text()
    config.write_text(yaml.safe_dump({**TINY_GENERATE, "prior": str(folder), "fake_estimator": "particles"}))
    runs = sorted((tmp_path / "runs").rglob("metrics.json"))
    assert main([*argv[:5], "vsd,sds", *argv[6:], "--docs", str(docs)]) != 0  # sds has no fake score to replace
    assert sorted((tmp_path / "runs").rglob("metrics.json")) == runs  # refused before any run


def test_a_parts_judge_names_both_parts_of_a_composite_outcome() -> None:
    from uni3d.bench.coverage import judge_outcomes
    from uni3d.tasks.embedded_prior.classifier import ShapeClassifier

    judge = ShapeClassifier(width=8, parts=True)
    heads = {"shape": [1, 0], "colour": [0, 4], "layout": [2, 0], "shape1": [0, 6], "colour1": [4, 10]}

    def fixed(images: torch.Tensor, batch: int = 256) -> dict[str, torch.Tensor]:
        return {k: torch.tensor(v) for k, v in heads.items()}

    judge.predict_all = fixed  # type: ignore[method-assign]
    assert judge_outcomes(judge, torch.zeros(2, 3, 32, 32)) == [
        ("stack", "cube", "red", "sphere", "blue"),
        ("sphere", "blue"),
    ]
