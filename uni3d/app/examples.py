"""The page's example requests: one per thing the shipped priors can show (a coloured primitive, an object with a
front, two things stacked, several answers to an open prompt), each filling prompt, prior, preset and particles.

An example whose prior is not offered on this machine is left out, so every example the page shows can run.
"""

from __future__ import annotations

from uni3d.tasks.text_to_3d.config import EMBEDDED_PRIOR, EMBEDDED_PRIORS_FOLDER

COMPOSITE_PRIOR = str(EMBEDDED_PRIORS_FOLDER / "shapes-composite")
"""The prior that knows noses, handles, knobs and two parts stacked or side by side (its value in the Prior menu)."""

EXAMPLE_FIELDS = ("prompt", "prior", "preset", "particles")
"""The page inputs an example fills, in the order of each row of :data:`EXAMPLES`."""

EXAMPLES: tuple[tuple[str, str, str, int], ...] = (
    ("a blue sphere with a red cone nose", COMPOSITE_PRIOR, "sds", 1),
    ("a red cube on top of a blue sphere", COMPOSITE_PRIOR, "sds", 1),
    ("a red cube", EMBEDDED_PRIOR, "sds", 1),
    ("a red object", EMBEDDED_PRIOR, "vsd", 4),
)


def offered_examples(priors: list[tuple[str, str]]) -> list[list[str | int]]:
    """The rows of :data:`EXAMPLES` whose prior is one of ``priors`` (the menu's ``(label, value)`` pairs)."""
    offered = {value for _, value in priors}
    return [list(row) for row in EXAMPLES if row[1] in offered]
