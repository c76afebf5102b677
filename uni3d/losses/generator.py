"""The generator loss of a preset: one call for every method (METHOD.md sections 3-4)."""

from __future__ import annotations

from torch import Tensor

from uni3d.losses._tensors import compute_dtype
from uni3d.losses.forms import expanded_loss, integral_loss, sid_loss
from uni3d.losses.presets import Preset
from uni3d.losses.ratio import RatioEstimate
from uni3d.losses.weighting import score_weight


def generator_loss(
    preset: Preset,
    *,
    x0: Tensor,
    x_t: Tensor,
    sigma: Tensor,
    d_real: Tensor,
    d_fake: Tensor | None = None,
    log_r: Tensor | None = None,
    ratio: RatioEstimate | None = None,
) -> Tensor:
    """Per-sample generator loss ``[B]`` of ``preset``; its gradient is the preset's gradient.

    Args:
        x0: generator output (live), any batch-first shape.
        x_t: ``x0 + sigma * n`` in VE units (live).
        sigma: ``[B]`` VE noise levels.
        d_real: teacher denoiser ``D_q(x_t; sigma)`` (classifier-free guidance already applied).
        d_fake: fake-score denoiser ``D_p(x_t; sigma)``; unused (may be ``None``) for ``fake_score="conditional"``.
        log_r: detached per-sample ``log r`` from the ratio head, or ``None`` for ``r = 1``; ignored by
            presets whose divergence does not use the ratio.
        ratio: the ratio head's :class:`~uni3d.losses.RatioEstimate`, in place of ``log_r``: its ``log_r``, and
            its ``moves`` mask (the expanded form drops the ratio-motion terms of clamped or repaired samples,
            see :func:`expanded_loss`).

    When ``preset.needs_input_grad``, ``d_real`` and ``d_fake`` must come from networks with frozen
    parameters evaluated on the live ``x_t`` for the exact gradient; otherwise they may be computed under
    ``torch.no_grad()``. A detached ``d_real`` with a live ``d_fake`` drops only the teacher's Jacobian (the 3D
    default, ``GenerateConfig.teacher_jacobian``; SDS drops it the same way).
    The DMD regression term is separate: :func:`uni3d.losses.regression_loss`.
    """
    if preset.fake_score == "conditional":
        d_fake = x0.detach()
    elif d_fake is None:
        raise ValueError(f"preset {preset.name!r} needs the fake-score prediction d_fake")
    if ratio is not None and log_r is not None:
        raise ValueError("pass log_r or ratio, not both")
    moves = None if ratio is None else ratio.moves
    log_r = log_r if ratio is None else ratio.log_r
    if not preset.uses_ratio:
        log_r = None
    weight = score_weight(preset.weighting, sigma, x0, d_real, preset.order)
    if preset.form == "integral":
        return integral_loss(x_t, sigma, d_real, d_fake, preset.divergence, log_r, weight)
    if preset.form == "expanded":
        return expanded_loss(x0, x_t, sigma, d_real, d_fake, preset.divergence, log_r, weight, moves)
    return sid_loss(x0, sigma, d_real, d_fake, preset.alpha, weight)


def regression_loss(x0: Tensor, target: Tensor) -> Tensor:
    """DMD's regression term ``mean (x0 - sg(target))^2`` per sample ``[B]`` (target: a teacher ODE sample)."""
    dt = compute_dtype(x0)
    return (x0.to(dt) - target.detach().to(dt)).pow(2).flatten(1).mean(1)
