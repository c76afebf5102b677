"""``uni3d eval-prior``: how often the prior's samples show the shape and colour their prompt asks for.

For every shape x colour pair, ``samples_per_prompt`` fully specified prompts ("a red cube, front view"; the camera
cycles through :data:`EVAL_VIEWS`, worded in the prior's view scheme) are sampled with diffusers' :class:`StableDiffusionPipeline` (loaded
from the folder, DDIM, classifier-free guidance) and judged by the classifier of
:mod:`uni3d.tasks.embedded_prior.classifier`. Outputs: ``samples.png`` (the first sample of each pair: shapes in rows,
colours in columns) and ``prior_eval.json`` (overall and per-shape / per-colour accuracies).

Whether a sample shows the object as the prompted camera would: ``view_iou`` is the mean intersection over union of
the sample's silhouette (:func:`silhouette`) with the true primitive's, rendered from that camera
(:func:`uni3d.tasks.embedded_prior.render.render_primitive`, the dataset's renderer); ``view_iou_turned`` compares the same
samples with the primitive seen from 45 degrees further round. For a cube or a pyramid the two are equal when the
prior ignores the azimuth, and ``view_iou`` is the larger when it follows it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from torch import Tensor

from uni3d.errors import UsageError
from uni3d.io import save_json
from uni3d.models.sampling import sample_images
from uni3d.models.views import load_view_scheme
from uni3d.models.vocabulary import COLOUR_NAMES, SHAPE_NAMES
from uni3d.scene.cameras import Cameras, look_at, spherical_to_position
from uni3d.tasks.embedded_prior.classifier import load_classifier
from uni3d.tasks.embedded_prior.dataset import subject
from uni3d.tasks.embedded_prior.grid import image_grid, labelled_grid, save_png
from uni3d.tasks.embedded_prior.primitives import SHAPES
from uni3d.tasks.embedded_prior.render import render_primitive

EVAL_VIEWS: tuple[tuple[float, float], ...] = ((15.0, 30.0), (15.0, 105.0), (15.0, 200.0), (70.0, 330.0))
"""``(elevation, azimuth)`` of the sampled prompts, in turn (coarse words: front, side, back, overhead), at distance 3
with a 40 degree field of view; off the axes, so that a prior told the azimuth must turn a cube to match."""
EVAL_DISTANCE, EVAL_FOV_DEG = 3.0, 40.0
TURN_DEG = 45.0
"""The azimuth offset of ``view_iou_turned``: a cube's or pyramid's silhouette is furthest from its own there."""
BACKGROUND_THRESHOLD = 0.2
"""A pixel is the object's when its darkest channel is below ``1 - BACKGROUND_THRESHOLD`` (white background)."""


@dataclass(frozen=True)
class EvalConfig:
    """Sampling settings of the evaluation."""

    samples_per_prompt: int = 4
    steps: int = 25
    guidance_scale: float = 3.0
    seed: int = 0
    batch_size: int = 120

    def __post_init__(self) -> None:
        if not 1 <= self.samples_per_prompt <= 64:
            raise UsageError(f"--samples-per-prompt must be 1-64, got {self.samples_per_prompt}")
        if not 1 <= self.steps <= 1000:
            raise UsageError(f"--steps must be 1-1000, got {self.steps}")
        if self.guidance_scale < 0 or self.batch_size < 1:
            raise UsageError("guidance scale must be >= 0 and batch size >= 1")


@dataclass
class EvalReport:
    """Accuracies of the classifier on the prior's samples (fractions in ``[0, 1]``)."""

    shape_accuracy: float
    colour_accuracy: float
    both_accuracy: float
    n_samples: int
    per_shape: dict[str, float] = field(default_factory=dict)
    per_colour: dict[str, float] = field(default_factory=dict)
    classifier_val_shape_accuracy: float = float("nan")
    classifier_val_colour_accuracy: float = float("nan")
    view_iou: float = float("nan")
    view_iou_turned: float = float("nan")
    per_shape_view_iou: dict[str, tuple[float, float]] = field(default_factory=dict)
    views: str = "coarse"
    config: dict[str, float | int] = field(default_factory=dict)


def silhouette(images: Tensor) -> Tensor:
    """Object masks ``(B, H, W)`` of images ``(B, 3, H, W)`` in ``[0, 1]`` on a white background."""
    return images.min(dim=1).values < 1 - BACKGROUND_THRESHOLD


def eval_cameras(views: list[tuple[float, float]], size: int, turn_deg: float = 0.0) -> Cameras:
    """Cameras at ``(elevation, azimuth + turn_deg)`` (degrees), distance :data:`EVAL_DISTANCE`, looking at the
    origin with the :data:`EVAL_FOV_DEG` field of view, rendering ``size x size``."""
    elevation, azimuth = (torch.tensor(column) for column in zip(*views, strict=True))
    eye = spherical_to_position(elevation, azimuth + turn_deg, torch.full((len(views),), EVAL_DISTANCE))
    fov = torch.full((len(views),), math.radians(EVAL_FOV_DEG))
    return Cameras(look_at(eye, torch.zeros_like(eye)), fov, size, size)


def true_silhouettes(shapes: list[int], cams: Cameras) -> Tensor:
    """Masks ``(B, H, W)`` of primitive ``shapes[b]`` seen by camera ``b`` (the dataset's renderer)."""
    masks = torch.zeros(len(shapes), cams.height, cams.width, dtype=torch.bool)
    index = torch.tensor(shapes)
    for s in index.unique().tolist():
        sel = (index == s).nonzero().flatten()
        _, alpha = render_primitive(SHAPES[SHAPE_NAMES[s]], torch.full((len(sel), 3), 0.5), cams[sel])
        masks[sel] = alpha > 0.5
    return masks


def iou(a: Tensor, b: Tensor) -> Tensor:
    """Per-item intersection over union ``(B,)`` of boolean masks ``(B, H, W)`` (1 where both are empty)."""
    inter, union = (a & b).sum((1, 2)).float(), (a | b).sum((1, 2)).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def load_pipeline(folder: str | Path) -> StableDiffusionPipeline:
    """diffusers' pipeline from a local SD folder (no download); one-line error for anything unreadable."""
    if not (Path(folder) / "model_index.json").is_file():
        raise UsageError(
            f"no Stable Diffusion folder at {folder} (model_index.json missing); train one: uni3d train-prior"
        )
    try:
        return StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None)
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot load {folder} as a Stable Diffusion folder ({type(err).__name__})") from err


def evaluate_prior(prior: str | Path, classifier: str | Path, out: str | Path, cfg: EvalConfig) -> EvalReport:
    """Sample the prompt grid, classify, write ``out/samples.png`` and ``out/prior_eval.json``."""
    judge, judge_report = load_classifier(classifier)
    pipe = load_pipeline(prior)
    pairs = [(s, c) for s in range(len(SHAPE_NAMES)) for c in range(len(COLOUR_NAMES))]
    items = [(s, c, k) for k in range(cfg.samples_per_prompt) for s, c in pairs]  # first block: one per pair
    views = load_view_scheme(prior)
    angles = [EVAL_VIEWS[k % len(EVAL_VIEWS)] for _, _, k in items]
    prompts = [
        views.caption(subject(SHAPE_NAMES[s], COLOUR_NAMES[c], "full"), *angle, EVAL_DISTANCE)
        for (s, c, _), angle in zip(items, angles, strict=True)
    ]
    images = torch.cat(
        [
            sample_images(pipe, prompts[i : i + cfg.batch_size], cfg.steps, cfg.guidance_scale, cfg.seed + i)
            for i in range(0, len(prompts), cfg.batch_size)
        ]
    )
    shape_pred, colour_pred = judge.predict(images)
    shape_true = torch.tensor([s for s, _, _ in items])
    colour_true = torch.tensor([c for _, c, _ in items])
    shape_ok, colour_ok = shape_pred == shape_true, colour_pred == colour_true
    drawn = silhouette(images)
    shapes = shape_true.tolist()
    same = iou(drawn, true_silhouettes(shapes, eval_cameras(angles, images.shape[-1])))
    turned = iou(drawn, true_silhouettes(shapes, eval_cameras(angles, images.shape[-1], TURN_DEG)))
    report = EvalReport(
        shape_accuracy=float(shape_ok.float().mean()),
        colour_accuracy=float(colour_ok.float().mean()),
        both_accuracy=float((shape_ok & colour_ok).float().mean()),
        n_samples=len(items),
        per_shape={n: float(shape_ok[shape_true == i].float().mean()) for i, n in enumerate(SHAPE_NAMES)},
        per_colour={n: float(colour_ok[colour_true == i].float().mean()) for i, n in enumerate(COLOUR_NAMES)},
        classifier_val_shape_accuracy=judge_report.shape_accuracy,
        classifier_val_colour_accuracy=judge_report.colour_accuracy,
        view_iou=float(same.mean()),
        view_iou_turned=float(turned.mean()),
        per_shape_view_iou={
            n: (float(same[shape_true == i].mean()), float(turned[shape_true == i].mean()))
            for i, n in enumerate(SHAPE_NAMES)
        },
        views=views.name,
        config=asdict(cfg),
    )
    out = Path(out)
    sheet = image_grid(images[: len(pairs)], cols=len(COLOUR_NAMES), scale=3)
    save_png(labelled_grid(sheet, SHAPE_NAMES, COLOUR_NAMES), out / "samples.png")
    save_json(out / "prior_eval.json", asdict(report))
    return report
