"""How often the prior draws what a composite or a held-out phrasing asks for, judged by a ``parts`` classifier.

Two prompt sets, each sampled ``samples_per_prompt`` times with the cameras of :data:`EVAL_VIEWS` in turn (diffusers'
pipeline, DDIM, classifier-free guidance, as :mod:`uni3d.tasks.embedded_prior.evaluate`):

- ``composites``: the coloured composites held out of the dataset (:func:`held_out_combinations`), in their
  canonical wording ("a blue cone on top of a purple torus"); a sample is right when the judge finds the layout
  and both parts' shapes and colours (a pair side by side in either order), except that from behind a front
  object (:data:`HIDDEN_MARKER_DEG`) its marker cannot be seen and only the layout and the body are judged;
- ``phrasings``: one held-out phrasing per shape with a synonym and per colour ("a box that is red",
  :data:`~uni3d.tasks.embedded_prior.phrasing.HELD_OUT_TEMPLATES`); right when the judge finds a single primitive of
  that shape and colour.

Outputs: ``composite_eval.json`` (accuracy per set and per prompt, the judge's own held-out accuracy beside it)
and ``composite_samples.png`` (a row per prompt).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from uni3d.errors import UsageError
from uni3d.io import save_json
from uni3d.models.sampling import sample_images
from uni3d.models.views import load_view_scheme
from uni3d.models.vocabulary import COLOUR_NAMES, SHAPE_NAMES, SYNONYMS
from uni3d.tasks.embedded_prior.classifier import load_classifier
from uni3d.tasks.embedded_prior.composites import LAYOUTS, Composite, held_out_combinations
from uni3d.tasks.embedded_prior.evaluate import EVAL_DISTANCE, EVAL_VIEWS, EvalConfig, load_pipeline
from uni3d.tasks.embedded_prior.grid import image_grid, save_png
from uni3d.tasks.embedded_prior.phrasing import HELD_OUT_TEMPLATES, caption_subject, with_articles

HIDDEN_MARKER_DEG = 60.0
"""A front object's marker is hidden from cameras within this many degrees of azimuth 180 (behind it)."""


@dataclass(frozen=True)
class Target:
    """What a prompt asks for: the judge's labels (a pair side by side in label order, a missing part as -1)."""

    prompt: str
    layout: int
    shapes: tuple[int, int]
    colours: tuple[int, int]


@dataclass
class CompositeReport:
    """Accuracies (fractions of samples) per prompt set and per prompt."""

    composites: float
    phrasings: float
    n_samples: int
    per_prompt: dict[str, float] = field(default_factory=dict)
    per_layout: dict[str, float] = field(default_factory=dict)
    judge_all_accuracy: float | None = None
    config: dict[str, float | int] = field(default_factory=dict)


def _target(composite: Composite, colours: tuple[str, ...], prompt: str) -> Target:
    shapes = [SHAPE_NAMES.index(s) for s in composite.shapes]
    cols = [COLOUR_NAMES.index(c) for c in colours]
    parts = (
        sorted(zip(shapes, cols, strict=True)) if composite.layout == "beside" else list(zip(shapes, cols, strict=True))
    )
    parts += [(-1, -1)] * (2 - len(parts))
    return Target(prompt, LAYOUTS.index(composite.layout), (parts[0][0], parts[1][0]), (parts[0][1], parts[1][1]))


def composite_targets() -> list[Target]:
    """The held-out composites in their canonical wording."""
    return [_target(c, cols, caption_subject(c, cols)) for c, cols in held_out_combinations()]


def phrasing_targets() -> list[Target]:
    """One held-out phrasing per shape that has a synonym and per colour, the template and synonym in turn."""
    templates = sorted(HELD_OUT_TEMPLATES)
    out = []
    for shape, words in SYNONYMS.items():
        if len(words) == 1:
            continue
        for k, colour in enumerate(COLOUR_NAMES):
            text = templates[k % len(templates)].format(s0=words[1 + k % (len(words) - 1)], c0=colour)
            out.append(_target(Composite("single", (shape,)), (colour,), with_articles(text)))
    return out


def _right(predicted: dict[str, torch.Tensor], targets: list[Target], marker_seen: list[bool]) -> torch.Tensor:
    none_shape, none_colour = len(SHAPE_NAMES), len(COLOUR_NAMES)
    want = {
        "layout": [t.layout for t in targets],
        "shape": [t.shapes[0] for t in targets],
        "colour": [t.colours[0] for t in targets],
        "shape1": [none_shape if t.shapes[1] < 0 else t.shapes[1] for t in targets],
        "colour1": [none_colour if t.colours[1] < 0 else t.colours[1] for t in targets],
    }
    right = {head: predicted[head] == torch.tensor(values) for head, values in want.items()}
    seen = torch.tensor(marker_seen)
    return right["layout"] & right["shape"] & right["colour"] & ((right["shape1"] & right["colour1"]) | ~seen)


def evaluate_composites(
    prior: str | Path, classifier: str | Path, out: str | Path, *, cfg: EvalConfig
) -> CompositeReport:
    """Sample both prompt sets, judge them, write ``out/composite_eval.json`` and ``out/composite_samples.png``."""
    judge, judge_report = load_classifier(classifier)
    if not judge.parts:
        raise UsageError(f"{classifier} has no part heads; train one on a dataset with composites")
    pipe = load_pipeline(prior)
    views = load_view_scheme(prior)
    sets = {"composites": composite_targets(), "phrasings": phrasing_targets()}
    items = [(name, t, k) for name, targets in sets.items() for t in targets for k in range(cfg.samples_per_prompt)]
    angles = [EVAL_VIEWS[k % len(EVAL_VIEWS)] for _, _, k in items]
    prompts = [views.caption(t.prompt, *angle, EVAL_DISTANCE) for (_, t, _), angle in zip(items, angles, strict=True)]
    images = torch.cat(
        [
            sample_images(pipe, prompts[i : i + cfg.batch_size], cfg.steps, cfg.guidance_scale, cfg.seed + i)
            for i in range(0, len(prompts), cfg.batch_size)
        ]
    )
    front = LAYOUTS.index("front")
    seen = [
        t.layout != front or abs(angle[1] - 180.0) > HIDDEN_MARKER_DEG
        for (_, t, _), angle in zip(items, angles, strict=True)
    ]
    right = _right(judge.predict_all(images), [t for _, t, _ in items], seen)

    def share(keep: list[bool]) -> float:
        mask = torch.tensor(keep)
        return float(right[mask].float().mean())

    report = CompositeReport(
        composites=share([name == "composites" for name, _, _ in items]),
        phrasings=share([name == "phrasings" for name, _, _ in items]),
        n_samples=len(items),
        per_prompt={t.prompt: share([u is t for _, u, _ in items]) for targets in sets.values() for t in targets},
        per_layout={
            LAYOUTS[lay]: share([name == "composites" and t.layout == lay for name, t, _ in items])
            for lay in sorted({t.layout for t in sets["composites"]})
        },
        judge_all_accuracy=judge_report.all_accuracy,
        config=asdict(cfg),
    )
    out = Path(out)
    save_png(image_grid(images, cols=cfg.samples_per_prompt, scale=3), out / "composite_samples.png")
    save_json(out / "composite_eval.json", asdict(report))
    return report
