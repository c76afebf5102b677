"""``uni3d distill-terms``: which term of the expanded form drives a distillation run (METHOD.md section 4).

Loads a run folder's config and checkpoint, draws one batch as the generator step does (same noise levels,
live ``x_t``, frozen teacher and fake score, the ratio head's estimate) and reports, per term of
:func:`uni3d.losses.expanded_terms` (SIM, ratio motion, DI, FGM) with the preset's time weighting, the mean
per-sample norm of its gradient with respect to the generator's output ``x0``, plus the ratio estimate's
range. The terms' gradients sum to the generator loss's gradient, so a term that dwarfs the others is what
the optimizer follows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from uni3d.errors import UsageError
from uni3d.losses import EXPANDED_TERMS, DenoiserOutputs, expanded_terms
from uni3d.losses._tensors import sample_weight
from uni3d.losses.weighting import score_weight
from uni3d.tasks.images.data import load_dataset
from uni3d.tasks.images.distill import ImageDistiller
from uni3d.tasks.images.distill_config import DistillConfig
from uni3d.tasks.images.distill_run import load_teacher
from uni3d.tasks.images.files import load_torch


@dataclass(frozen=True)
class TermReport:
    """Mean per-sample gradient norm of each weighted term w.r.t. ``x0``, and the batch's ``log r`` range."""

    step: int
    preset: str
    grad_norms: dict[str, float]
    log_r_min: float
    log_r_max: float

    def lines(self) -> list[str]:
        total = sum(self.grad_norms.values()) or 1.0
        rows = [f"{self.preset} at step {self.step}: mean |d term / d x0| per sample (share of the sum)"]
        rows += [f"  {name:13s} {value:12.4g}  ({value / total:6.1%})" for name, value in self.grad_norms.items()]
        rows.append(f"  log r in [{self.log_r_min:.3f}, {self.log_r_max:.3f}]")
        return rows


def term_report(distiller: ImageDistiller) -> TermReport:
    """Per-term gradient norms on one fresh batch of ``distiller`` (its random stream advances)."""
    preset = distiller.preset
    if preset.form != "expanded":
        raise UsageError(f"preset {preset.name!r} does not use the expanded form (uni-<f> presets do)")
    draw = distiller.draw(distiller.step_count, train_generator=True)
    x0, den = draw.x0, distiller.denoise(draw)
    ratio = distiller.loop.ratio_estimate(den.ratio_logits)
    log_r = None if ratio is None else ratio.log_r
    weight = score_weight(preset.weighting, den.sigma, x0, den.d_real, preset.order)
    outputs = DenoiserOutputs(x0=x0, x_t=den.x_t, sigma=den.sigma, d_real=den.d_real, d_fake=den.d_fake, ratio=ratio)
    terms = expanded_terms(outputs, divergence=preset.divergence)
    norms = {}
    for name in EXPANDED_TERMS:
        (grad,) = torch.autograd.grad(
            (sample_weight(weight, x0) * terms[name]).sum(), x0, retain_graph=True, allow_unused=True
        )
        norms[name] = 0.0 if grad is None else float(grad.flatten(1).norm(dim=1).mean())
    span = torch.zeros(1) if log_r is None else log_r
    return TermReport(distiller.step_count, preset.name, norms, float(span.min()), float(span.max()))


def run_term_report(folder: Path, batch_size: int | None = None, seed: int = 0) -> TermReport:
    """:func:`term_report` on the checkpoint of the ``uni3d distill`` run in ``folder``."""
    try:
        cfg = DistillConfig.from_dict(json.loads((folder / "config.json").read_text()))
        state = load_torch(folder / "checkpoint.pt")
    except (OSError, ValueError) as err:
        raise UsageError(f"{folder} is not a uni3d distill run folder with a checkpoint: {err}") from None
    data = load_dataset("mnist", "train")
    distiller = ImageDistiller(cfg, load_teacher(cfg.teacher, data), data)
    distiller.load_state(state)
    distiller.cfg = replace(cfg, batch_size=batch_size or cfg.batch_size)
    distiller.gen.manual_seed(seed)
    return term_report(distiller)
