"""Composite objects of the shapes dataset: geometry, colours by part, caption wording and held-out combinations."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from uni3d.errors import UsageError
from uni3d.models.tokenizer import build_clip_tokenizer
from uni3d.models.vocabulary import COLOUR_NAMES, SHAPE_NAMES, SYNONYMS
from uni3d.scene import orbit_cameras
from uni3d.tasks.embedded_prior import (
    ShapesDatasetConfig,
    load_shapes_dataset,
    make_shapes_dataset,
    save_shapes_dataset,
)
from uni3d.tasks.embedded_prior.composites import (
    LAYOUTS,
    MARKERS,
    Composite,
    all_composites,
    bounding_radius,
    combination_key,
    held_out_combinations,
)
from uni3d.tasks.embedded_prior.phrasing import HELD_OUT_TEMPLATES, caption_subject, caption_words
from uni3d.tasks.embedded_prior.primitives import BOUND_RADIUS, BOX_HALF, COLOURS, SHAPES
from uni3d.tasks.embedded_prior.render import render_parts, render_primitive

MIXED = ShapesDatasetConfig(n=240, size=16, seed=4, wording="varied", p_front=0.3, p_stack=0.2, p_beside=0.2)


@pytest.fixture(scope="module")
def mixed():
    return make_shapes_dataset(MIXED)


def _part_points(composite: Composite, part: int) -> torch.Tensor:
    """Grid points inside part ``part`` of ``composite``."""
    axis = torch.linspace(-1.0, 1.0, 48)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    return grid[composite.part_sdfs()[part](grid) < 0]


@pytest.mark.parametrize("composite", all_composites(), ids=str)
def test_every_composite_fits_the_scene_bound(composite: Composite) -> None:
    assert 0.1 < bounding_radius(composite) <= BOUND_RADIUS
    for part in range(len(composite.shapes)):
        points = _part_points(composite, part)
        assert len(points) > 20 and points.abs().max() <= BOX_HALF


def test_layouts_put_the_parts_where_their_words_say() -> None:
    front = Composite("front", ("cube", "cone"))
    body, nose = _part_points(front, 0), _part_points(front, 1)
    assert nose[:, 2].mean() > body[:, 2].max() - 0.1 and nose[:, 2].max() > body[:, 2].max() + 0.2  # sticks out at +z
    assert abs(nose[:, 0].mean()) < 0.02 and abs(nose[:, 1].mean()) < 0.02
    top, bottom = (_part_points(Composite("stack", ("sphere", "torus")), i) for i in (0, 1))
    assert top[:, 1].mean() > bottom[:, 1].mean() + 0.2  # part 0 above
    for side in (1, -1):
        a, b = (_part_points(Composite("beside", ("cube", "cone"), side), i) for i in (0, 1))
        assert side * a[:, 0].mean() > 0 > side * b[:, 0].mean()
        assert abs(a[:, 1].min() - b[:, 1].min()) < 0.05  # a common floor


@pytest.mark.parametrize("lower", list(SHAPES))
def test_stacked_parts_touch_whatever_their_shapes(lower: str) -> None:
    """A ball sinks into a ring's hole and a ring rests on a cone's sides until they touch: the deepest point of the
    two parts' overlap is at the surface (within the grid's step), never a gap and never a deep overlap."""
    axis = torch.linspace(-0.8, 0.8, 97)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    for upper in SHAPES:
        f0, f1 = Composite("stack", (upper, lower)).part_sdfs()
        assert abs(float(torch.maximum(f0(grid), f1(grid)).min())) < 0.02, (upper, lower)


def test_bad_composites_are_one_line_errors() -> None:
    for layout, shapes in (
        ("front", ("torus", "cone")),
        ("front", ("cube", "torus")),
        ("stack", ("cube",)),
        ("x", ("cube",)),
    ):
        with pytest.raises(UsageError):
            Composite(layout, shapes)
    with pytest.raises(UsageError, match="side"):
        Composite("beside", ("cube", "cone"), 0)


def test_a_front_marker_shows_from_the_front_and_hides_from_the_back() -> None:
    """The Janus property: the marker's colour fills the middle of a front view and is absent from the back."""
    cams = orbit_cameras(4, elevation_deg=0.0, distance=3.0, size=32)  # azimuths 0, 90, 180, 270
    albedo = torch.tensor([COLOURS["blue"], COLOURS["red"]]).expand(4, 2, 3)
    rgb, alpha = render_parts(Composite("front", ("sphere", "cone")).part_sdfs(), albedo, cams)
    reddish = (rgb[..., 0] > 2 * rgb[..., 2]) & (alpha > 0.99)
    assert reddish[0, 14:18, 14:18].all()  # the nose, head-on, in the middle
    assert reddish[1].sum() > 5 and reddish[3].sum() > 5  # in profile, on one side
    assert reddish[2].sum() == 0  # hidden behind the body


def test_one_part_render_is_the_primitive_render() -> None:
    cams = orbit_cameras(2, elevation_deg=20.0, size=16)
    albedo = torch.tensor([COLOURS["green"]]).expand(2, 3)
    one = render_primitive(SHAPES["cone"], albedo, cams)
    parts = render_parts([SHAPES["cone"]], albedo[:, None], cams)
    for x, y in zip(one, parts, strict=True):
        torch.testing.assert_close(x, y)


def test_caption_words_are_single_tokens_of_the_caption_tokenizer() -> None:
    tokenizer = build_clip_tokenizer()
    for word in [*caption_words(), *COLOUR_NAMES, *SHAPE_NAMES]:
        assert tokenizer.tokenize(word) == [word + "</w>"], word


def test_canonical_captions() -> None:
    assert caption_subject(Composite("single", ("cube",)), ("red",), kind="full") == "a red cube"
    assert caption_subject(Composite("single", ("cube",)), ("orange",), kind="colour") == "an orange object"
    assert (
        caption_subject(Composite("front", ("sphere", "cone")), ("blue", "red"), kind="full")
        == "a blue sphere with a red cone nose"
    )
    assert (
        caption_subject(Composite("front", ("sphere", "cone")), ("blue", "red"), kind="shape")
        == "a sphere with a cone nose"
    )
    assert (
        caption_subject(Composite("stack", ("cube", "sphere")), ("red", "blue"), kind="full")
        == "a red cube on top of a blue sphere"
    )
    assert (
        caption_subject(Composite("beside", ("cone", "torus")), ("green", "yellow"), kind="colour")
        == "a green object beside a yellow object"
    )
    with pytest.raises(UsageError, match="caption kind"):
        caption_subject(Composite("single", ("cube",)), ("red",), kind="size")


def test_varied_captions_agree_with_labels_and_never_say_a_held_out_phrasing(mixed) -> None:
    layouts = {LAYOUTS[k] for k in mixed.layout.tolist()}
    assert layouts == set(LAYOUTS)
    templates = [
        re.compile("^" + t.replace("a ", "an? ", 1).replace("{c0}", "(\\w+)").replace("{s0}", "(\\w+)") + ",")
        for t in HELD_OUT_TEMPLATES
    ]
    phrasings = set()
    for i, caption in enumerate(mixed.captions):
        subject_words = caption.split(",")[0].split()
        phrasings.add(" ".join(w for w in subject_words if w not in COLOUR_NAMES))
        parts = [p for p in mixed.part_shape[i].tolist() if p >= 0]
        if mixed.caption_kind[i] != 2:  # the shape is said, by its name or a synonym
            for k, s in enumerate(parts):
                words = SYNONYMS[SHAPE_NAMES[s]] + ((MARKERS[SHAPE_NAMES[s]],) if k and mixed.layout[i] == 1 else ())
                assert any(w in caption.split(",")[0].split() for w in words), caption
        if mixed.caption_kind[i] != 1:  # the colours are said
            for c in mixed.part_colour[i].tolist():
                assert c < 0 or COLOUR_NAMES[c] in caption, caption
        for pattern in templates:
            match = pattern.match(caption)
            assert not (match and any(g in {w for ws in SYNONYMS.values() for w in ws[1:]} for g in match.groups())), (
                caption
            )
    assert len(phrasings) > 60  # many wordings, not one template


def test_held_out_combinations_are_never_drawn(mixed) -> None:
    held = held_out_combinations()
    assert len(held) == 12 and len({combination_key(c, col) for c, col in held}) == 12
    keys = {combination_key(c, col) for c, col in held}
    for i in np.flatnonzero(mixed.layout):
        shapes = tuple(SHAPE_NAMES[s] for s in mixed.part_shape[i])
        colours = tuple(COLOUR_NAMES[c] for c in mixed.part_colour[i])
        composite = Composite(LAYOUTS[mixed.layout[i]], shapes, int(mixed.side[i]))
        assert combination_key(composite, colours) not in keys
        assert colours[0] != colours[1]


def test_mixed_dataset_round_trip_and_part_colours_in_pixels(mixed, tmp_path: Path) -> None:
    loaded = load_shapes_dataset(save_shapes_dataset(mixed, tmp_path / "mixed.npz"))
    for name in ("images", "layout", "part_shape", "part_colour", "side", "shape", "colour"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(mixed, name))
    assert loaded.config == MIXED
    palette = torch.tensor(list(COLOURS.values()))
    for i in np.flatnonzero(mixed.layout == LAYOUTS.index("beside"))[:10]:  # both parts' colours are on the image
        pixels = torch.from_numpy(mixed.images[i][mixed.alpha[i] == 255]).float() / 255
        hue = pixels / pixels.sum(-1, keepdim=True).clamp(min=1e-3)
        ref = palette / palette.sum(-1, keepdim=True)
        nearest = torch.cdist(hue, ref).argmin(-1)
        for c in mixed.part_colour[i].tolist():
            if COLOUR_NAMES[c] not in ("black", "grey"):  # no hue to find
                assert (nearest == c).sum() >= 2, COLOUR_NAMES[c]


def test_first_version_files_load_with_part_labels(tmp_path: Path) -> None:
    data = make_shapes_dataset(ShapesDatasetConfig(n=12, size=16, seed=0))
    path = save_shapes_dataset(data, tmp_path / "v1.npz")
    with np.load(path) as z:  # rewrite it as the first version wrote it
        arrays = {k: z[k] for k in z.files if k not in ("layout", "part_shape", "part_colour", "side", "layouts")}
    arrays["format"] = np.array("uni3d-shapes-1")
    np.savez(tmp_path / "old.npz", **arrays)
    old = load_shapes_dataset(tmp_path / "old.npz")
    np.testing.assert_array_equal(old.part_shape[:, 0], data.shape)
    assert (old.part_shape[:, 1] == -1).all() and (old.layout == 0).all() and old.captions == data.captions


def test_composite_shares_that_sum_to_one_leave_no_singles() -> None:
    cfg = ShapesDatasetConfig(n=8, size=16, p_stack=0.32, p_beside=0.68)
    assert cfg.composite_shares[0] == 0.0
    ShapesDatasetConfig(n=8, p_front=0.33, p_stack=0.56, p_beside=0.11)  # a float sum just over 1 is fine
    assert (make_shapes_dataset(cfg).layout > 0).all()


def test_bad_composite_shares_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from uni3d.cli.main import main

    assert (
        main(
            [
                "make-shapes-dataset",
                "--n",
                "8",
                "--p-front",
                "0.7",
                "--p-stack",
                "0.5",
                "--out",
                str(tmp_path / "d.npz"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--p-front" in err
    assert (
        main(["make-shapes-dataset", "--n", "8", "--size", "16", "--p-beside", "1", "--out", str(tmp_path / "d.npz")])
        == 0
    )
    assert "8 beside" in capsys.readouterr().out


def test_parts_classifier_trains_saves_and_loads(mixed, tmp_path: Path) -> None:
    from uni3d.tasks.embedded_prior.classifier import (
        ClassifierConfig,
        load_classifier,
        part_labels,
        save_classifier,
        train_classifier,
    )

    labels = part_labels(mixed)
    beside = torch.from_numpy(mixed.layout == LAYOUTS.index("beside"))
    single = torch.from_numpy(mixed.layout == 0)
    assert (labels["shape"][beside] <= labels["shape1"][beside]).all()  # an unordered pair in label order
    assert (labels["shape1"][single] == len(SHAPE_NAMES)).all() and (
        labels["colour1"][single] == len(COLOUR_NAMES)
    ).all()
    assert (labels["layout"] == torch.from_numpy(mixed.layout)).all()
    model, report = train_classifier(mixed, ClassifierConfig(steps=3, width=8, parts=True), progress=False)
    assert report.all_accuracy is not None and 0 <= report.all_accuracy <= min(
        report.layout_accuracy, report.shape_accuracy
    )
    loaded, loaded_report = load_classifier(save_classifier(model, report, tmp_path / "judge.pt"))
    assert loaded.parts and loaded_report == report
    images = torch.from_numpy(mixed.images[:5]).permute(0, 3, 1, 2).float() / 255
    heads = loaded.predict_all(images)
    assert set(heads) == {"shape", "colour", "layout", "shape1", "colour1"} and heads["shape1"].max() <= len(
        SHAPE_NAMES
    )
    torch.testing.assert_close(heads["shape"], model.predict_all(images)["shape"])


def test_the_shipped_first_version_classifier_still_loads() -> None:
    from uni3d.tasks.embedded_prior.classifier import load_classifier

    judge, report = load_classifier(Path(__file__).resolve().parents[1] / "assets" / "priors" / "shapes-classifier.pt")
    assert not judge.parts and report.layout_accuracy is None and report.shape_accuracy > 0.9


def test_composite_eval_writes_its_report(mixed, tmp_path: Path) -> None:
    import json

    from uni3d.models.tiny_sd import build_tiny_pipeline
    from uni3d.tasks.embedded_prior.classifier import ClassifierConfig, save_classifier, train_classifier
    from uni3d.tasks.embedded_prior.evaluate import EvalConfig
    from uni3d.tasks.embedded_prior.evaluate_composites import composite_targets, evaluate_composites, phrasing_targets

    prior = build_tiny_pipeline(tmp_path / "tiny", sample_size=8)
    judge = save_classifier(
        *train_classifier(mixed, ClassifierConfig(steps=2, width=8, parts=True), progress=False), tmp_path / "j.pt"
    )
    report = evaluate_composites(prior, judge, tmp_path / "out", cfg=EvalConfig(samples_per_prompt=1, steps=2))
    assert report.n_samples == len(composite_targets()) + len(phrasing_targets()) == 12 + 40
    assert 0 <= report.composites <= 1 and set(report.per_layout) == {"front", "stack", "beside"}
    assert json.loads((tmp_path / "out" / "composite_eval.json").read_text())["n_samples"] == 52
    assert (tmp_path / "out" / "composite_samples.png").is_file()
    assert all("that is" in t.prompt or "colo" in t.prompt for t in phrasing_targets())
    plain = save_classifier(
        *train_classifier(mixed, ClassifierConfig(steps=1, width=8), progress=False), tmp_path / "p.pt"
    )
    with pytest.raises(UsageError, match="part heads"):
        evaluate_composites(prior, plain, tmp_path / "out", cfg=EvalConfig(samples_per_prompt=1, steps=2))


def test_the_composite_prompt_file_is_the_held_out_list() -> None:
    from uni3d.tasks.text_to_3d.batch import read_prompts

    path = Path(__file__).resolve().parents[1] / "prompts" / "composites.txt"
    expected = [caption_subject(c, colours) for c, colours in held_out_combinations()]
    assert [p.prompt for p in read_prompts(path)] == expected


def test_back_views_of_a_front_object_judge_the_body_only() -> None:
    from uni3d.tasks.embedded_prior.evaluate_composites import _right, composite_targets

    target = next(t for t in composite_targets() if t.layout == LAYOUTS.index("front"))
    heads = {"layout": [target.layout], "shape": [target.shapes[0]], "colour": [target.colours[0]]}
    wrong_marker = {
        **{k: torch.tensor(v) for k, v in heads.items()},
        "shape1": torch.tensor([6]),
        "colour1": torch.tensor([10]),
    }
    assert not _right(wrong_marker, [target], [True])[0]  # seen: the marker must be right
    assert _right(wrong_marker, [target], [False])[0]  # hidden: the body and layout decide
