"""``uni3d eval-prior``: how often the prior's samples show the shape and colour their prompt asks for.

For every shape x colour pair, ``samples_per_prompt`` fully specified prompts ("a red cube, front view"; the view
cycles through front, side, back, overhead) are sampled with diffusers' :class:`StableDiffusionPipeline` (loaded
from the folder, DDIM, classifier-free guidance) and judged by the classifier of
:mod:`uni3d.prior.classifier`. Outputs: ``samples.png`` (the first sample of each pair: shapes in rows,
colours in columns) and ``prior_eval.json`` (overall and per-shape / per-colour accuracies).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from uni3d.errors import UsageError
from uni3d.io import save_json
from uni3d.prior.classifier import load_classifier
from uni3d.prior.dataset import caption
from uni3d.prior.grid import image_grid, labelled_grid, save_png
from uni3d.prior.primitives import COLOUR_NAMES, SHAPE_NAMES
from uni3d.prior.train import sample_images
from uni3d.prior.views import VIEW_NAMES


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
    config: dict[str, float | int] = field(default_factory=dict)


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
    prompts = [caption(SHAPE_NAMES[s], COLOUR_NAMES[c], "full", VIEW_NAMES[k % len(VIEW_NAMES)]) for s, c, k in items]
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
    report = EvalReport(
        shape_accuracy=float(shape_ok.float().mean()),
        colour_accuracy=float(colour_ok.float().mean()),
        both_accuracy=float((shape_ok & colour_ok).float().mean()),
        n_samples=len(items),
        per_shape={n: float(shape_ok[shape_true == i].float().mean()) for i, n in enumerate(SHAPE_NAMES)},
        per_colour={n: float(colour_ok[colour_true == i].float().mean()) for i, n in enumerate(COLOUR_NAMES)},
        classifier_val_shape_accuracy=judge_report.shape_accuracy,
        classifier_val_colour_accuracy=judge_report.colour_accuracy,
        config=asdict(cfg),
    )
    out = Path(out)
    sheet = image_grid(images[: len(pairs)], cols=len(COLOUR_NAMES), scale=3)
    save_png(labelled_grid(sheet, SHAPE_NAMES, COLOUR_NAMES), out / "samples.png")
    save_json(out / "prior_eval.json", asdict(report))
    return report
