"""The measures of the coverage benchmark: outcome distributions, their total-variation distance, its null, and the
embedded prior's own answer to a prompt.

An outcome is what the shape-and-colour classifier (:mod:`uni3d.tasks.embedded_prior.classifier`) calls an image:
``(shape, colour)``. The prior's answer to an under-specified prompt ("a red object") is the distribution of the
outcomes of its DDIM samples at the cameras, view words and guidance the text-to-3D pipeline uses; a preset's answer
is the distribution of its 3D outcomes. The null of their distance is what ``n`` draws from the prior's own samples
give against all of them: a preset whose distance lies inside it cannot be told from sampling the prior.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import trimesh

from uni3d.models.sampling import sample_images
from uni3d.models.views import load_view_scheme
from uni3d.models.vocabulary import COLOUR_NAMES, SHAPE_NAMES
from uni3d.scene.cameras import CameraSampler
from uni3d.tasks.embedded_prior.classifier import load_classifier
from uni3d.tasks.embedded_prior.evaluate import load_pipeline
from uni3d.tasks.reconstruct.views import rasterize_trimesh
from uni3d.tasks.text_to_3d.config import GenerateConfig

Outcome = tuple[str, str]
"""``(shape, colour)`` as the classifier names them."""


def distribution(outcomes: Sequence[Outcome]) -> dict[Outcome, float]:
    """The share of each outcome."""
    counts = Counter(outcomes)
    return {o: c / len(outcomes) for o, c in counts.items()}


def total_variation(p: dict[Outcome, float], q: dict[Outcome, float]) -> float:
    """``1/2 sum |p - q|`` over the outcomes of either: 0 for equal distributions, 1 for disjoint ones."""
    return 0.5 * sum(abs(p.get(o, 0.0) - q.get(o, 0.0)) for o in set(p) | set(q))


def null_tv(reference: Sequence[Outcome], n: int, *, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """``(mean, 95th percentile)`` of the distance between ``n`` draws (with replacement) from ``reference`` and
    ``reference`` itself, over ``resamples`` resamplings: what a method that samples the prior exactly would score
    with ``n`` outcomes."""
    rng = np.random.default_rng(seed)
    full = distribution(reference)
    picks = rng.integers(0, len(reference), size=(resamples, n))
    tvs = np.array([total_variation(distribution([reference[i] for i in row]), full) for row in picks])
    return float(tvs.mean()), float(np.percentile(tvs, 95))


def asset_outcome(
    folder: str | Path, classifier: str | Path, *, cfg: GenerateConfig, views: int = 8, seed: int = 0
) -> Outcome:
    """What the classifier calls an exported asset: its vertex-colour mesh (``model_vertex_color.glb`` in
    ``folder``) rasterized at the classifier's 32 px from ``views`` cameras of the 3D pipeline's ranges, on white,
    each view classified, the most frequent shape and colour kept. The colour is read off renders, not averaged over
    the surface (an average calls a red-and-blue cube grey)."""
    judge, _ = load_classifier(classifier)
    mesh = trimesh.load(Path(folder) / "model_vertex_color.glb", force="mesh")
    sampler = CameraSampler(cfg.elevation_deg, cfg.azimuth_deg, cfg.distance, cfg.fov_deg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cams = sampler.sample(views, 32)
    rgb, alpha = rasterize_trimesh(cams, mesh)
    images = (rgb + (1 - alpha)).clamp(0, 1).permute(0, 3, 1, 2)
    shape, colour = judge.predict(images)
    return SHAPE_NAMES[int(shape.mode().values)], COLOUR_NAMES[int(colour.mode().values)]


def prior_outcomes(
    prior: str | Path,
    classifier: str | Path,
    prompt: str,
    n: int,
    *,
    cfg: GenerateConfig,
    steps: int = 25,
    seed: int = 0,
) -> list[Outcome]:
    """``n`` outcomes of the prior's DDIM samples (``steps`` steps) for ``prompt`` at cameras drawn by the 3D
    pipeline's sampler with ``cfg``'s ranges, worded in the prior's view scheme, at ``cfg``'s guidance."""
    judge, _ = load_classifier(classifier)
    pipe = load_pipeline(prior)
    sampler = CameraSampler(cfg.elevation_deg, cfg.azimuth_deg, cfg.distance, cfg.fov_deg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cams = sampler.sample(n, 8)
    views = load_view_scheme(prior)
    prompts = views.prompts(prompt, cams) if cfg.view_dependent else [prompt] * n
    images = torch.cat(
        [sample_images(pipe, prompts[i : i + 64], steps, cfg.guidance_scale, seed + i) for i in range(0, n, 64)]
    )
    shape, colour = judge.predict(images)
    return [(SHAPE_NAMES[s], COLOUR_NAMES[c]) for s, c in zip(shape.tolist(), colour.tolist(), strict=True)]
