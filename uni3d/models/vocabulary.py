"""The embedded prior's caption words for what it draws: shape and colour names, in label order.

The shapes dataset (:mod:`uni3d.tasks.embedded_prior.primitives`) keys its signed distances and albedos by these
names, and the prior's tokenizer (:mod:`uni3d.models.tokenizer`) holds each as one token.
"""

SHAPE_NAMES: tuple[str, ...] = ("sphere", "cube", "cylinder", "cone", "torus", "pyramid")
COLOUR_NAMES: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "grey", "black")
