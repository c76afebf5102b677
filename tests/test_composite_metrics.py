"""Composite prompts in 3D: parsing every wording, and the scores of true, wrong, turned and Janus meshes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh
from conftest import TINY_BENCH

from uni3d.bench.composite_metrics import (
    CompositeTarget,
    marker_regions,
    parse_composite,
    part_of,
    score_composite,
    union_mesh,
)
from uni3d.errors import UsageError
from uni3d.tasks.embedded_prior.composites import Composite, held_out_combinations
from uni3d.tasks.embedded_prior.phrasing import TEMPLATES, caption_subject
from uni3d.tasks.embedded_prior.primitives import COLOURS


@pytest.mark.parametrize(
    ("prompt", "layout", "shapes", "colours"),
    [
        ("a red cube on top of a blue sphere", "stack", ("cube", "sphere"), ("red", "blue")),
        ("a blue ball under a red box", "stack", ("cube", "sphere"), ("red", "blue")),
        ("A green cone next to a yellow ring", "beside", ("cone", "torus"), ("green", "yellow")),
        ("a cone and a tube side by side", "beside", ("cone", "cylinder"), (None, None)),
        ("a blue sphere with a red cone nose", "front", ("sphere", "cone"), ("blue", "red")),
        ("a grey cube with a yellow handle", "front", ("cube", "cylinder"), ("grey", "yellow")),
        ("a sphere with a nose", "front", ("sphere", "cone"), (None, None)),
        ("a red object on a blue object", None, None, None),  # shapes open: no geometry to score against
        ("a red cube", None, None, None),
        ("a red cube, a blue cone and a green torus", None, None, None),
        ("a torus with a nose", None, None, None),  # no such body in the dataset
        ("a blue sphere with a red cone on top", "stack", ("cone", "sphere"), ("red", "blue")),
        ("a red cube and a blue ball on it", "stack", ("sphere", "cube"), ("blue", "red")),
        ("a cube that is red on top of a ball that is blue", "stack", ("cube", "sphere"), ("red", "blue")),
        ("a red cube beside a blue cone, seen from above", "beside", ("cube", "cone"), ("red", "blue")),
        ("a red cube on the left of a blue sphere", "beside", ("cube", "sphere"), ("red", "blue")),
        ("a red-coloured cube on top of a blue ball, side view", "stack", ("cube", "sphere"), ("red", "blue")),
        ("a red cube with a blue sphere nose", None, None, None),  # a nose is a cone
        ("two red cubes", None, None, None),
        ("a cube on top of a sphere with a nose", None, None, None),  # three things
    ],
)
def test_parse_composite(prompt, layout, shapes, colours) -> None:
    target = parse_composite(prompt)
    if layout is None:
        assert target is None
        return
    assert target is not None and target.composite.layout == layout
    assert target.composite.shapes == shapes and target.colours == colours


def test_every_dataset_wording_parses_back() -> None:
    rng = np.random.default_rng(0)
    for composite, colours in held_out_combinations():
        for _ in range(len(TEMPLATES[composite.layout]) * 3):
            prompt = caption_subject(composite, colours, rng=rng)
            target = parse_composite(prompt)
            assert target is not None, prompt
            if composite.layout == "beside":
                assert set(zip(target.composite.shapes, target.colours, strict=True)) == set(
                    zip(composite.shapes, colours, strict=True)
                ), prompt
            else:
                assert (target.composite.shapes, target.colours) == (composite.shapes, colours), prompt


def _painted(composite: Composite, colours: tuple[str, ...], yaw_deg: float = 0.0) -> trimesh.Trimesh:
    mesh = union_mesh(composite).copy()
    part = part_of(composite, mesh.vertices)
    rgb = np.asarray([COLOURS[c] for c in colours])[part]
    mesh.visual.vertex_colors = np.concatenate([rgb * 255, np.full((len(rgb), 1), 255)], 1).astype(np.uint8)
    mesh.apply_transform(trimesh.transformations.rotation_matrix(np.radians(yaw_deg), [0, 1, 0]))
    return mesh


@pytest.mark.parametrize(
    "composite", [Composite("front", ("sphere", "cone")), Composite("stack", ("cube", "torus"))], ids=str
)
def test_the_true_mesh_is_right_and_a_swapped_one_is_not(composite: Composite) -> None:
    target = CompositeTarget("x", composite, ("blue", "red"))
    row = score_composite(_painted(composite, ("blue", "red")), target)
    assert row["right"] and row["chamfer"] < 0.01 and row["relation_right"]
    wrong = score_composite(_painted(composite, ("red", "blue")), target)  # colours on the other parts
    assert not wrong["parts_right"] and not wrong["right"]


def test_a_stack_upside_down_breaks_the_relation() -> None:
    target = CompositeTarget("x", Composite("stack", ("cube", "sphere")), ("red", "blue"))
    flipped = _painted(Composite("stack", ("sphere", "cube")), ("blue", "red"))  # the sphere on top
    row = score_composite(flipped, target)
    assert row["relation_right"] is False and not row["right"]


def test_a_turned_front_object_is_found_and_its_front_measured() -> None:
    composite = Composite("front", ("cube", "cone"))
    target = CompositeTarget("x", composite, ("grey", "yellow"))
    row = score_composite(_painted(composite, ("grey", "yellow"), yaw_deg=90.0), target)
    assert row["right"] and row["marker_regions"] == 1 and not row["janus"]
    assert abs(row["front_azimuth_deg"] - 90.0) < 10  # turned +90 about y: +z goes to +x
    assert abs(score_composite(_painted(composite, ("grey", "yellow")), target)["front_azimuth_deg"]) < 10


def test_a_painted_blob_or_the_wrong_shapes_are_not_right() -> None:
    """Colours in the right places are not enough: the named shapes must be the nearest pair."""
    target = CompositeTarget("x", Composite("stack", ("cube", "sphere")), ("red", "blue"))
    blob = trimesh.creation.icosphere(subdivisions=4, radius=0.3)
    blob.apply_scale([1.0, 1.6, 1.0])
    rgb = np.where(blob.vertices[:, 1:2] > 0, COLOURS["red"], COLOURS["blue"])
    blob.visual.vertex_colors = np.concatenate([rgb * 255, np.full((len(rgb), 1), 255)], 1).astype(np.uint8)
    assert not score_composite(blob, target)["right"]
    for shapes in (("sphere", "sphere"), ("cube", "cube"), ("cylinder", "sphere")):
        row = score_composite(_painted(Composite("stack", shapes), ("red", "blue")), target)
        assert not row["right_shapes"] and not row["right"] and tuple(row["shapes_found"]) == shapes


def test_a_beside_pair_is_right_on_either_side() -> None:
    target = CompositeTarget("x", Composite("beside", ("cone", "torus")), ("green", "yellow"))
    other_side = _painted(Composite("beside", ("cone", "torus"), -1), ("green", "yellow"))
    row = score_composite(other_side, target)
    assert row["right"] and row["right_shapes"]


def test_two_noses_are_a_janus_outcome() -> None:
    composite = Composite("front", ("sphere", "cone"))
    target = CompositeTarget("x", composite, ("blue", "red"))
    front = _painted(composite, ("blue", "red"))
    back = front.copy()
    back.apply_transform(trimesh.transformations.rotation_matrix(np.pi, [0, 1, 0]))
    janus = trimesh.util.concatenate([front, back])
    count, _ = marker_regions(janus, target)
    assert count == 2 and score_composite(janus, target)["janus"]
    side = front.copy()  # a second nose only 45 degrees round is one front, not two faces
    side.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 4, [0, 1, 0]))
    assert marker_regions(trimesh.util.concatenate([front, side]), target)[0] == 1


def test_plan_runs_accuracy_then_janus_without_doing_a_run_twice() -> None:
    from uni3d.bench.composites import plan

    front, stack = (
        parse_composite(p) for p in ("a blue sphere with a red cone nose", "a red cube on top of a blue ball")
    )
    runs = plan([front, stack], ["sds"], seeds=1, janus_seeds=2)
    keys = [(t.prompt, s, vd) for t, _, s, vd in runs]
    assert len(keys) == len(set(keys)) == 2 + 3  # seed 0 with view words is both an accuracy and a Janus run
    assert keys[:2] == [(front.prompt, 0, True), (stack.prompt, 0, True)]
    assert all(t is front for t, _, _, _ in runs[2:])


def test_wilson_interval() -> None:
    from uni3d.bench.composites import wilson

    lo, hi = wilson(0, 16)
    assert lo == 0 and 0.15 < hi < 0.25
    lo, hi = wilson(8, 16)
    assert lo < 0.5 < hi


def test_two_step_bench_writes_json_docs_and_resumes(tiny_prior, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from uni3d.bench.composites import read_targets, run_bench

    monkeypatch.setattr("uni3d.bench.composite_metrics.YAW_STEPS", 2)
    monkeypatch.setattr("uni3d.bench.composite_metrics.N_POINTS", 2000)
    folder, prior = tiny_prior
    settings = {"prior": str(folder), **TINY_BENCH}
    prompts = tmp_path / "p.txt"
    prompts.write_text("a blue sphere with a red cone nose\na red cube on top of a blue ball\n")
    targets = read_targets(prompts)
    lines: list[str] = []
    docs = tmp_path / "docs"
    kwargs = {"seeds": 1, "janus_seeds": 1, "out": tmp_path / "runs", "docs": docs, "prior": prior, "log": lines.append}
    rows = run_bench(targets, ["sds"], settings, command="uni3d bench composites --steps 2", **kwargs)
    assert [(r["prompt"][:8], r["view_dependent"], r["status"]) for r in rows] == [
        ("a blue s", True, "done"),
        ("a red cu", True, "done"),
        ("a blue s", False, "done"),
    ]
    assert all(isinstance(r["right"], bool) and r["chamfer"] >= 0 for r in rows)
    saved = json.loads((docs / "benchmarks" / "composites.json").read_text())
    (name,) = saved["summary"]["accuracy"]  # preset | steps | settings label (the tiny prior's settings)
    assert (
        name.startswith("sds|2|") and "grid_resolution=16" in name and saved["summary"]["accuracy"][name]["runs"] == 2
    )
    assert set(saved["summary"]["janus"]) == {f"{name}|on", f"{name}|off"}
    text = (docs / "benchmarks.md").read_text()
    assert "<!-- composites:begin -->" in text and "`uni3d bench composites --steps 2`" in text and "Janus" in text
    again = run_bench(targets, ["sds"], settings, **kwargs)
    assert len(again) == 3 and lines[-1].startswith("0 runs to do")
    more = run_bench(
        targets, ["sds"], {**settings, "steps": 3}, **{**kwargs, "janus_seeds": 0}
    )  # other steps: new runs
    assert len(more) == 5 and Path(more[-1]["out"]).parent.name == "steps-3"
    summary = json.loads((docs / "benchmarks" / "composites.json").read_text())["summary"]
    assert summary["accuracy"][name.replace("|2|", "|3|")]["runs"] == 2 and summary["janus"] == {}  # no Janus seeds
    bad = tmp_path / "bad.txt"
    bad.write_text("a red cube\n")
    with pytest.raises(UsageError, match="names no composite"):
        read_targets(bad)
    bad.write_text("a red cube on a red sphere\n")
    with pytest.raises(UsageError, match="one colour"):
        read_targets(bad)
