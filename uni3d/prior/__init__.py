"""Text-conditioned priors: the shapes dataset of the embedded prior, view-dependent prompts, timestep ranges.

The diffusers-backed modules are imported explicitly (they are the only ones that import diffusers and
transformers, and take seconds to import): ``uni3d.prior.stable_diffusion`` (:class:`StableDiffusionPrior`),
``uni3d.prior.tiny`` (:func:`build_tiny_pipeline`) and ``uni3d.prior.tokenizer``.
"""

from uni3d.prior.dataset import (
    CAPTION_KINDS,
    ShapesDataset,
    ShapesDatasetConfig,
    load_shapes_dataset,
    make_shapes_dataset,
    save_shapes_dataset,
    subject,
)
from uni3d.prior.primitives import COLOUR_NAMES, COLOURS, SHAPE_NAMES, SHAPES
from uni3d.prior.timesteps import TimestepRange
from uni3d.prior.views import (
    ANGLES,
    COARSE,
    VIEW_NAMES,
    VIEW_SCHEMES,
    ViewScheme,
    apparent_distance,
    camera_angles,
    spell,
    split_view,
    view_index,
)

__all__ = [
    "CAPTION_KINDS",
    "COLOURS",
    "COLOUR_NAMES",
    "SHAPES",
    "SHAPE_NAMES",
    "ANGLES",
    "COARSE",
    "VIEW_NAMES",
    "VIEW_SCHEMES",
    "ViewScheme",
    "apparent_distance",
    "ShapesDataset",
    "ShapesDatasetConfig",
    "TimestepRange",
    "camera_angles",
    "subject",
    "load_shapes_dataset",
    "make_shapes_dataset",
    "save_shapes_dataset",
    "view_index",
    "spell",
    "split_view",
]
