"""``uni3d bench shapes``: the metrics on known meshes, and a 2-step benchmark on a tiny prior writes its files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import trimesh
from conftest import TINY_BENCH

from uni3d.bench.shape_metrics import (
    classify_shape,
    colour_scores,
    nearest_colour,
    parse_target,
    primitive_mesh,
    score_mesh,
    shape_chamfer,
    size_ratio,
)
from uni3d.bench.shapes import plan, row_key, run_bench, settings_label
from uni3d.bench.shapes_report import compare, run_groups, summarise, write_results
from uni3d.tasks.embedded_prior.primitives import COLOURS, CUBE_HALF, SPHERE_RADIUS


def _coloured(mesh: trimesh.Trimesh, rgb: tuple[float, float, float]) -> trimesh.Trimesh:
    out = mesh.copy()
    rgba = np.tile(np.array([*np.round(np.asarray(rgb) * 255), 255], np.uint8), (len(out.vertices), 1))
    out.visual = trimesh.visual.ColorVisuals(out, vertex_colors=rgba)
    return out


def test_parse_target() -> None:
    assert parse_target("a red cube") == parse_target("a red cube")
    t = parse_target("an orange cone")
    assert (t.shape, t.colour, t.specified) == ("cone", "orange", True)
    assert parse_target("a cube").colour is None and not parse_target("a cube").specified
    assert parse_target("a red object").shape is None
    assert parse_target("a gray torus").colour == "grey"
    assert (parse_target("a box that is red").shape, parse_target("a red-coloured ring").shape) == ("cube", "torus")


def test_true_primitives_have_the_dataset_sizes() -> None:
    cube = primitive_mesh("cube")
    assert np.allclose(cube.bounds, [[-CUBE_HALF] * 3, [CUBE_HALF] * 3], atol=0.02)
    sphere = primitive_mesh("sphere")
    assert np.allclose(np.linalg.norm(sphere.vertices, axis=1), SPHERE_RADIUS, atol=0.01)


def test_chamfer_is_zero_for_the_true_shape_and_clearly_more_for_another(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("uni3d.bench.shape_metrics.YAW_STEPS", 3)  # turns of 0, 30, 60 degrees: enough here, 4x faster
    box = trimesh.creation.box(extents=[2 * CUBE_HALF] * 3)
    assert shape_chamfer(box, "cube") < 0.01
    turned = box.copy()
    turned.apply_transform(trimesh.transformations.rotation_matrix(np.radians(30), [0, 1, 0]))
    assert shape_chamfer(turned, "cube") < 0.01  # a turn about the vertical axis is not an error
    ball = trimesh.creation.icosphere(subdivisions=4, radius=SPHERE_RADIUS)
    assert shape_chamfer(ball, "sphere") < 0.01
    # a sphere (r 0.5) and the cube (half side 0.4) are close: about 3 % of the diagonal apart, 4x the sampling floor
    floor = max(shape_chamfer(box, "cube"), shape_chamfer(ball, "sphere"))
    assert shape_chamfer(ball, "cube") > 3 * floor and shape_chamfer(box, "sphere") > 3 * floor
    assert classify_shape(box)[0] == "cube" and classify_shape(ball)[0] == "sphere"
    bigger = box.copy()
    bigger.apply_scale(1.5)
    assert shape_chamfer(bigger, "cube") > 0.05  # size counts
    assert shape_chamfer(bigger, "cube", size_free=True) < 0.01 and abs(size_ratio(bigger, "cube") - 1.5) < 0.02


def test_size_free_shape_calls_a_too_large_rounded_cube_a_cube() -> None:
    ball = trimesh.creation.icosphere(subdivisions=4)
    rounded = ball.vertices / (np.abs(ball.vertices) ** 6).sum(1, keepdims=True) ** (1 / 6)  # |x|_6 = 1
    for scale, plain in ((1.0, "cube"), (1.2, "sphere")):
        cube = trimesh.Trimesh(rounded * CUBE_HALF * scale, ball.faces)
        assert classify_shape(cube)[0] == plain  # size and shape judged together
        assert classify_shape(cube, size_free=True)[0] == "cube"
    row = score_mesh(cube, parse_target("a red cube"))
    assert (row["shape_pred"], row["shape_pred_size_free"], row["right_shape_size_free"]) == ("sphere", "cube", True)
    assert 1.08 < row["size_ratio"] < 1.16  # 1.2 x the rounded cube's RMS radius, 0.94 of the true cube's
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=SPHERE_RADIUS * 1.2)
    assert classify_shape(sphere, size_free=True)[0] == "sphere"


def test_colour_classification_and_error() -> None:
    box = trimesh.creation.box(extents=[0.8] * 3)
    for name, rgb in COLOURS.items():
        assert nearest_colour(rgb) == name
    red = colour_scores(_coloured(box, COLOURS["red"]), "red")
    assert red["colour_pred"] == "red" and red["right_colour"] and red["colour_error"] < 0.01
    blue = colour_scores(_coloured(box, COLOURS["blue"]), "red")
    assert blue["colour_pred"] == "blue" and not blue["right_colour"] and blue["colour_error"] > 0.5


def test_summary_counts_distinct_shapes_and_colours() -> None:
    base = {"steps": 2, "preset": "sds", "status": "done", "wall_seconds": 1.0, "cpu_seconds": 1.0}
    rows = [
        {**base, "prompt": "a cube", "seed": 0, "shape_pred": "cube", "colour_pred": "red"},
        {**base, "prompt": "a cube", "seed": 1, "shape_pred": "cube", "colour_pred": "blue"},
        {**base, "prompt": "a cube", "seed": 2, "shape_pred": "sphere", "colour_pred": "blue"},
    ]
    (div,) = summarise(rows)["diversity"]
    assert (div["seeds"], div["distinct_shapes"], div["distinct_colours"]) == (3, 2, 2)


def test_accuracy_table_is_seed_0_and_more_seeds_get_their_own_rows() -> None:
    base = {"steps": 2, "preset": "sds", "status": "done", "wall_seconds": 1.0, "cpu_seconds": 1.0}
    good = {"chamfer": 0.02, "right_colour": True, "right_shape": True, "colour_error": 0.1}
    bad = {"chamfer": 0.09, "right_colour": True, "right_shape": False, "colour_error": 0.1}
    rows = [
        {**base, **good, "prompt": "a red cube", "seed": 0},
        {**base, **good, "prompt": "a blue sphere", "seed": 0},
        {**base, **bad, "prompt": "a red cube", "seed": 1},
        {**base, **good, "prompt": "a blue sphere", "seed": 1},
    ]
    summary = summarise(rows)
    (acc,) = summary["accuracy"]
    assert (acc["prompts"], acc["both"], acc["chamfer_mean"]) == (2, 2, 0.02)
    assert [(s["seed"], s["both"], s["missed"]) for s in summary["seeds"]] == [(0, 2, []), (1, 1, ["a red cube"])]
    assert summarise(rows[:2])["seeds"] == []  # one seed: no per-seed rows
    assert summary["sizes"] == []  # rows scored before the size metric: no size table
    sized = [{**rows[0], "size_ratio": 1.2, "right_shape": False, "right_shape_size_free": True}]
    sized.append({**rows[1], "size_ratio": 1.0, "right_shape_size_free": True})
    (size,) = summarise(sized + rows[2:])["sizes"]
    assert (size["runs"], size["right_shape"], size["right_shape_size_free"]) == (2, 1, 2)
    assert size["size_ratio_mean"] == pytest.approx(1.1) and size["wrong_only_for_size"] == [
        "a red cube (seed 0, 1.20x)"
    ]
    targets = [parse_target(q) for q in ("a red cube", "a cube")]
    runs = [(t.prompt, p, s) for t, p, s in plan(targets, ["sds"], seeds=2, accuracy_seeds=3)]
    assert runs == [("a red cube", "sds", s) for s in range(3)] + [("a cube", "sds", s) for s in range(2)]


def test_two_step_bench_writes_json_docs_and_resumes(
    tiny_prior, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("uni3d.bench.shape_metrics.YAW_STEPS", 2)
    monkeypatch.setattr("uni3d.bench.shape_metrics.N_POINTS", 2000)
    folder, prior = tiny_prior
    settings = {"prior": str(folder), **TINY_BENCH}
    docs = tmp_path / "docs"
    lines: list[str] = []
    args = (["a red cube", "a cube"], ["sds"], settings, 2, tmp_path / "runs", docs, prior, lines.append)
    rows = run_bench(*args, command="uni3d bench shapes --steps 2")
    assert [(r["prompt"], r["seed"], r["status"]) for r in rows] == [
        ("a red cube", 0, "done"),
        ("a cube", 0, "done"),
        ("a cube", 1, "done"),
    ]
    saved = json.loads((docs / "benchmarks" / "shapes.json").read_text())
    assert len(saved["rows"]) == 3 and saved["summary"]["accuracy"][0]["prompts"] == 1
    assert saved["summary"]["diversity"][0]["seeds"] == 2
    red = saved["rows"][0]
    assert red["chamfer"] >= 0 and red["colour_pred"] and red["wall_seconds"] > 0 and red["cpu_seconds"] > 0
    text = (docs / "benchmarks.md").read_text()
    assert "<!-- shapes:begin -->" in text and "a red cube" in text
    sheet_path, tiles = docs / "benchmarks" / "shapes" / "contact_sheet.png", docs / "benchmarks" / "shapes" / "tiles"
    assert sheet_path.is_file() and len(list(tiles.glob("*.png"))) == 3
    assert "`uni3d bench shapes --steps 2`" in text and saved["invocations"][0]["runs"] == 3
    assert saved["invocations"][0]["cpu"] == saved["machine"]["cpu"] and f"on {saved['machine']['cpu']}: 3 runs" in text
    again = run_bench(*args, command="uni3d bench shapes --steps 2")
    assert len(again) == 3 and "0 runs to do" in lines[-1]
    assert json.loads((docs / "benchmarks" / "shapes.json").read_text())["invocations"][1]["runs"] == 0
    lower = {**settings, "export": {**settings["export"], "iso_level": 2.0}}
    old_tiles = sorted(tiles.glob("*.png"))
    redone = run_bench(args[0], ["sds"], lower, *args[3:], command="x", reexport=True)
    assert "exporting 3 finished runs again" in lines and lines[-1].startswith("[re-export 3/3]")
    new_tiles = sorted(tiles.glob("*.png"))  # re-exported under other settings: new tiles, the old ones pruned
    assert len(new_tiles) == 3 and not set(old_tiles) & set(new_tiles)
    for old, new in zip(rows, redone, strict=True):
        assert new["reexported"] and new["cpu_seconds"] == old["cpu_seconds"]
        assert json.loads((Path(new["out"]) / "metrics.json").read_text())["iso_level"] == 2.0
    # a metric added later: --rescore scores the meshes again (no export); a run folder gone keeps its row
    json_path = docs / "benchmarks" / "shapes.json"
    saved = json.loads(json_path.read_text())
    for r in saved["rows"]:
        r.pop("size_ratio", None), r.pop("shape_pred_size_free")
    json_path.write_text(json.dumps(saved))
    (Path(saved["rows"][2]["out"]) / "model_vertex_color.glb").unlink()
    rescored = run_bench(*args, command="x", rescore=True)
    assert "scoring 3 finished runs again" in lines and lines[-1].startswith("[rescore 2/3]")  # 3/3: nothing new
    assert rescored[0]["rescored"] and rescored[0]["size_ratio"] > 0 and rescored[1]["shape_pred_size_free"]
    assert "rescored" not in rescored[2] and "shape_pred_size_free" not in rescored[2]
    assert [r["export_seconds"] for r in rescored] == [r["export_seconds"] for r in redone]
    # the sheet outlives the run folders: a deleted run keeps its stored picture; with neither it is left off
    before = iio.imread(sheet_path)
    shutil.rmtree(rescored[0]["out"])
    write_results(docs, rescored)
    assert np.array_equal(iio.imread(sheet_path), before)
    for path in tiles.glob("*.png"):
        path.unlink()
    write_results(docs, rescored)
    # the red cube's group (its only run) is gone from the sheet; the open prompt's two runs stay
    assert iio.imread(sheet_path).shape[0] < before.shape[0] and len(list(tiles.glob("*.png"))) == 2


def test_settings_label_names_what_differs_from_the_defaults() -> None:
    assert settings_label({}) == "" and settings_label({"steps": 50, "lambda_orient": 0.01}) == ""  # defaults
    label = settings_label({"lambda_normal_smooth": 2, "field": {"blob_radius": 0.2}, "export": {"mc_resolution": 64}})
    assert label == "export.mc_resolution=64; field.blob_radius=0.2; lambda_normal_smooth=2.0"
    same = {"lambda_normal_smooth": 2.0, "field": {"blob_radius": 0.2}, "export": {"mc_resolution": 64}}
    assert settings_label(same) == label  # an integer given for a float setting is that float
    row = {"prompt": "a red cube", "preset": "sds", "steps": 400, "seed": 0}
    assert row_key(row) == "a red cube|sds|400|0"  # rows from before labels: the defaults
    assert row_key({**row, "settings": "export.mc_resolution=64"}) == row_key(row)  # export alone: the same run
    assert row_key({**row, "settings": label}) == row_key(row) + "|field.blob_radius=0.2; lambda_normal_smooth=2.0"


def test_rows_with_other_settings_are_their_own_group_and_never_the_target(tmp_path: Path) -> None:
    base = {"steps": 2, "status": "done", "wall_seconds": 1.0, "cpu_seconds": 1.0, "colour_error": 0.1}
    base.update(load_average_1min=1.0, shape_pred="cube", colour_pred="red", right_shape=True, out=str(tmp_path))
    good, bad = {"chamfer": 0.02, "right_colour": True}, {"chamfer": 0.09, "right_colour": False}
    label = "lambda_normal_smooth=30.0"
    rows = [
        {**base, **good, "preset": "sds", "prompt": "a red cube", "seed": 0},
        {**base, **bad, "preset": "sds", "prompt": "a red cube", "seed": 0, "settings": label},
        {**base, **bad, "preset": "uni-rkl", "prompt": "a red cube", "seed": 0},
        {**base, **good, "preset": "uni-rkl", "prompt": "a red cube", "seed": 0, "settings": label},
    ]
    acc = summarise(rows)["accuracy"]
    assert [(a["preset"], a["settings"], a["both"]) for a in acc] == [
        ("sds", "", 1),
        ("sds", label, 0),
        ("uni-rkl", "", 0),
        ("uni-rkl", label, 1),
    ]
    # uni-* against sds only with the same settings: the defaults' uni-rkl loses, the labelled one wins
    assert [line.split(": lower Chamfer on ")[1][0] for line in compare(rows)] == ["0", "1"]
    assert f"[{label}]" in compare(rows)[1]
    assert list(run_groups(rows)) == [(2, "sds"), (2, f"sds [{label}]"), (2, "uni-rkl"), (2, f"uni-rkl [{label}]")]
    open_prompt = {**rows[0], "prompt": "a red object"}  # under-specified: its own row of the contact sheet
    assert list(run_groups([rows[0], open_prompt])) == [(2, "sds"), (2, "sds, open prompts")]
    (tmp_path / "benchmarks.md").write_text("# Benchmarks\n")
    write_results(tmp_path, rows)
    text = (tmp_path / "benchmarks.md").read_text()
    assert f"| 2 | sds [{label}] | a red cube | 0.090 ✗ |" in text and "| 2 | sds | a red cube | 0.020 |" in text


def test_particles_are_refused_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from uni3d.cli.main import main

    config = tmp_path / "c.yaml"
    config.write_text("particles: 2\n")
    assert (
        main(["bench", "shapes", "--config", str(config), "--out", str(tmp_path / "o"), "--docs", str(tmp_path)]) == 2
    )
    err = capsys.readouterr().err
    assert "scores one asset per run" in err and err.count("\n") == 1 and not (tmp_path / "o").exists()
