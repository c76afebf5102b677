"""The generator loss of a preset: one call for every method (METHOD.md sections 3-4)."""

from __future__ import annotations

from torch import Tensor

from uni3d.losses._tensors import compute_dtype
from uni3d.losses.forms import expanded_loss, integral_loss, sid_loss
from uni3d.losses.inputs import DenoiserOutputs
from uni3d.losses.presets import Preset
from uni3d.losses.weighting import score_weight


def generator_loss(preset: Preset, outputs: DenoiserOutputs) -> Tensor:
    """Per-sample generator loss ``[B]`` of ``preset`` on ``outputs``; its gradient is the preset's gradient.

    When ``preset.needs_input_grad``, ``d_real`` and ``d_fake`` must come from networks with frozen parameters
    evaluated on the live ``x_t`` for the exact gradient; otherwise they may be computed under
    ``torch.no_grad()``. A detached ``d_real`` with a live ``d_fake`` drops only the teacher's Jacobian (the 3D
    default, ``GenerateConfig.teacher_jacobian``; SDS drops it the same way). ``d_fake`` is ignored (may be
    ``None``) for ``fake_score="conditional"`` presets, and the ratio for presets whose divergence does not use
    it. The DMD regression term is separate: :func:`regression_loss`.
    """
    o = outputs
    if preset.fake_score == "conditional":
        o = o.with_changes(d_fake=o.x0.detach())
    elif o.d_fake is None:
        raise ValueError(f"preset {preset.name!r} needs the fake-score prediction d_fake")
    if not preset.uses_ratio:
        o = o.with_changes(ratio=None)
    weight = score_weight(preset.weighting, o.sigma, o.x0, o.d_real, preset.order)
    if preset.form == "integral":
        return integral_loss(o, divergence=preset.divergence, weight=weight)
    if preset.form == "expanded":
        return expanded_loss(o, divergence=preset.divergence, weight=weight)
    return sid_loss(o, alpha=preset.alpha, weight=weight)


def regression_loss(x0: Tensor, target: Tensor) -> Tensor:
    """DMD's regression term ``mean (x0 - sg(target))^2`` per sample ``[B]`` (target: a teacher ODE sample)."""
    dt = compute_dtype(x0)
    return (x0.to(dt) - target.detach().to(dt)).pow(2).flatten(1).mean(1)
