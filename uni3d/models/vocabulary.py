"""The embedded prior's caption words for what it draws: shape and colour names, in label order.

The shapes dataset (:mod:`uni3d.tasks.embedded_prior.primitives`) keys its signed distances and albedos by these
names, and the prior's tokenizer (:mod:`uni3d.models.tokenizer`) holds each as one token.
"""

SHAPE_NAMES: tuple[str, ...] = ("sphere", "cube", "cylinder", "cone", "torus", "pyramid")
COLOUR_NAMES: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "grey", "black")
SYNONYMS: dict[str, tuple[str, ...]] = {
    "sphere": ("sphere", "ball"),
    "cube": ("cube", "box"),
    "cylinder": ("cylinder", "tube"),
    "cone": ("cone",),
    "torus": ("torus", "ring", "donut"),
    "pyramid": ("pyramid",),
}
"""Shape name -> the words a caption may use for it, the shape's own name first."""
COMPOSITE_WORDS: tuple[str, ...] = (
    *("ball", "box", "tube", "ring", "donut", "nose", "handle", "knob", "thing", "the", "that", "is", "has"),
    *("with", "on", "top", "of", "under", "below", "beside", "next", "to", "and", "by"),
    *("coloured", "colored"),
)
"""The words of varied and composite captions beyond shapes, colours and views (each one token of the prior's
tokenizer; :mod:`uni3d.tasks.embedded_prior.phrasing` tests that they cover its templates)."""
