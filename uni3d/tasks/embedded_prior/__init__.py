"""The embedded prior, made here: the shapes dataset (primitives in named colours, rendered from captioned
views), the prior's training and evaluation, and the shape-and-colour classifier that judges its samples.

The prior itself is a Stable Diffusion folder (``assets/priors/shapes``) loaded like any other through
:class:`uni3d.models.stable_diffusion.StableDiffusionPrior`.
"""

from uni3d.tasks.embedded_prior.dataset import (
    CAPTION_KINDS,
    ShapesDataset,
    ShapesDatasetConfig,
    load_shapes_dataset,
    make_shapes_dataset,
    save_shapes_dataset,
    subject,
)
from uni3d.tasks.embedded_prior.primitives import COLOURS, SHAPES

__all__ = [
    "CAPTION_KINDS",
    "COLOURS",
    "SHAPES",
    "ShapesDataset",
    "ShapesDatasetConfig",
    "load_shapes_dataset",
    "make_shapes_dataset",
    "save_shapes_dataset",
    "subject",
]
