"""Caption wording for the shapes dataset: the phrasings people type, not one template.

A caption names what its kind allows (``full``: shapes and colours; ``shape``: shapes only, colours left open;
``colour``: colours only, each shape said as "object") in one of several templates per layout, with synonyms
for the shape words ("box", "ball", "ring", "tube"), word orders ("a cube that is red", "red cube"),
articles ("a", "the", none) and spellings ("red-coloured", "red-colored"). ``plain`` wording is the first
template ("a red cube").

Held out of training (:func:`is_held_out`): a synonym inside the word-order templates ("a box that is red",
"a red-coloured ball"). Each of its pieces is trained (the synonym in other templates, the template with the
canonical word), so scoring those captions measures whether the prior reads a phrasing it never saw whole.
"""

from __future__ import annotations

import re

import numpy as np

from uni3d.errors import UsageError
from uni3d.models.vocabulary import SYNONYMS
from uni3d.tasks.embedded_prior.composites import MARKERS, Composite

WORDINGS: tuple[str, ...] = ("plain", "varied")

SINGLE_TEMPLATES: tuple[str, ...] = (
    "a {c0} {s0}",
    "{c0} {s0}",
    "the {c0} {s0}",
    "a {s0} that is {c0}",
    "a {c0}-coloured {s0}",
    "a {c0}-colored {s0}",
)
HELD_OUT_TEMPLATES: frozenset[str] = frozenset({"a {s0} that is {c0}", "a {c0}-coloured {s0}", "a {c0}-colored {s0}"})
"""Templates whose captions with a synonym (not the shape's own name) are held out of training."""
TEMPLATES: dict[str, tuple[str, ...]] = {
    "single": SINGLE_TEMPLATES,
    "front": (
        "a {c0} {s0} with a {c1} {s1} {w}",
        "a {c0} {s0} with a {c1} {w}",
        "a {c0} {s0} that has a {c1} {s1} {w}",
    ),
    "stack": (
        "a {c0} {s0} on top of a {c1} {s1}",
        "a {c0} {s0} on a {c1} {s1}",
        "a {c1} {s1} under a {c0} {s0}",
        "a {c1} {s1} below a {c0} {s0}",
    ),
    "beside": (
        "a {c0} {s0} beside a {c1} {s1}",
        "a {c0} {s0} next to a {c1} {s1}",
        "a {c0} {s0} and a {c1} {s1} side by side",
    ),
}
"""Layout -> caption templates; ``s0, c0`` is part 0 (body, upper part, or either of a pair), ``w`` a marker's word."""
UNDER_SPECIFIED: dict[str, tuple[str, ...]] = {
    "shape": ("a {s0}", "the {s0}", "{s0}"),
    "colour": ("a {c0} object", "a {c0} thing"),
}
"""A single primitive's templates when the caption leaves the colour (``shape``) or the shape (``colour``) open."""


def caption_words() -> list[str]:
    """Every word a varied caption can hold besides shape, colour and view words (what its tokenizer must hold)."""
    templates = [*SINGLE_TEMPLATES, *sum(TEMPLATES.values(), ()), *sum(UNDER_SPECIFIED.values(), ())]
    words = re.findall(r"[a-z]+", re.sub(r"\{\w+\}", " ", " ".join(templates)))
    synonyms = [w for names in SYNONYMS.values() for w in names]
    return list(dict.fromkeys([*words, "an", "object", *synonyms, *MARKERS.values()]))


def with_articles(text: str) -> str:
    """``"a"`` before a vowel becomes ``"an"``."""
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def is_held_out(template: str, words: tuple[str, ...], shapes: tuple[str, ...]) -> bool:
    """Whether a caption from ``template`` saying ``words`` for ``shapes`` is held out of training."""
    return template in HELD_OUT_TEMPLATES and any(w != s for w, s in zip(words, shapes, strict=True))


def caption_subject(
    composite: Composite,
    colours: tuple[str, ...],
    *,
    kind: str = "full",
    rng: np.random.Generator | None = None,
    training: bool = True,
) -> str:
    """The words before the view words, e.g. "a blue sphere with a red cone nose" (``rng=None``: the first
    template and the shapes' own names, the wording of benchmark prompts; otherwise drawn, held-out phrasings
    excluded when ``training``)."""
    layout, shapes = composite.layout, composite.shapes
    if kind not in ("full", "shape", "colour"):
        raise UsageError(f"unknown caption kind {kind!r}; valid: full, shape, colour")
    if layout == "single" and kind != "full":
        templates = UNDER_SPECIFIED[kind]
    else:
        templates = TEMPLATES[layout]
    while True:
        template = templates[0] if rng is None else templates[int(rng.integers(len(templates)))]
        words = tuple(s if rng is None else SYNONYMS[s][int(rng.integers(len(SYNONYMS[s])))] for s in shapes)
        if not (training and is_held_out(template, words, shapes)):
            break
    fields = {f"s{i}": w for i, w in enumerate(words)} | {f"c{i}": c for i, c in enumerate(colours)}
    if layout == "front":
        fields["w"] = MARKERS[shapes[1]]
    text = template
    if kind == "shape":
        text = re.sub(r"\{c\d\} ", "", text)  # composites only: a single primitive has its own templates
    elif kind == "colour":
        text = re.sub(r"\{s1\} \{w\}", "{w}", text)
        fields = {**fields, **{f"s{i}": "object" for i in range(len(shapes))}}
    return with_articles(" ".join(text.format(**fields).split()))
