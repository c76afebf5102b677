"""The two gradient forms of METHOD.md, as losses whose autograd gradient is the method's gradient.

Everything is in VE units (``x_t = x0 + sigma * n``) and score units: the scores are read off the
denoisers, ``s = (D - x_t) / sigma^2``, so ``y = s_p - s_q = (D_p - D_q) / sigma^2`` and
``c - s_p = (x0 - D_p) / sigma^2`` (section 1). Inputs may have any batch-first shape and dtype
(float32, bfloat16, float64); reductions run in float32 or better. Each function returns a per-sample
loss ``[B]``: its value is a surrogate, only its gradient is the divergence gradient. The caller owns
``backward()``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from uni3d.losses._tensors import batch_dot, compute_dtype, per_sample, sample_weight
from uni3d.losses.divergences import Divergence
from uni3d.losses.inputs import DenoiserOutputs


def _ratio(log_r: Tensor | None, like: Tensor) -> Tensor:
    """``r = exp(log_r)`` per sample, detached; ``None`` means ``r = 1`` (METHOD.md section 5, ratio="none")."""
    if log_r is None:
        return torch.ones(like.shape[0], dtype=compute_dtype(like), device=like.device)
    return log_r.detach().to(compute_dtype(like)).exp()


def _score_difference(o: DenoiserOutputs) -> Tensor:
    """``y = s_p - s_q = (D_p - D_q) / sigma^2`` in the compute dtype."""
    dt = compute_dtype(o.x_t)
    return (o.fake.to(dt) - o.d_real.to(dt)) / per_sample(o.sigma, o.x_t).pow(2)


def integral_loss(outputs: DenoiserOutputs, *, divergence: Divergence, weight: Tensor | float = 1.0) -> Tensor:
    """Integral form (section 3): ``L = sg(w h(r) (s_p - s_q)) . x_t``.

    Gradient: ``E[w h(r) (s_p - s_q)^T dx_t/dtheta]``. ``rkl`` gives Diff-Instruct / VSD; ``d_fake = x0`` (the
    conditional score ``c`` in place of ``s_p``) gives SDS. The denoisers may be evaluated without gradient: only
    ``x_t`` carries it.
    """
    o = outputs
    coef = per_sample(sample_weight(weight, o.x_t) * divergence.h(_ratio(o.log_r, o.x_t)), o.x_t)
    return batch_dot((coef * _score_difference(o)).detach(), o.x_t.to(compute_dtype(o.x_t)))


EXPANDED_TERMS: tuple[str, ...] = ("sim", "ratio_motion", "di", "fgm")
"""The four terms of the expanded form, in the order of :func:`expanded_loss`'s docstring."""


def expanded_terms(outputs: DenoiserOutputs, *, divergence: Divergence) -> dict[str, Tensor]:
    """The four per-sample terms ``[B]`` of :func:`expanded_loss` (unweighted), by name (:data:`EXPANDED_TERMS`).

    Their sum is the loss; apart, each term's gradient shows which part of the expanded form drives a run.
    """
    o = outputs
    dt = compute_dtype(o.x_t)
    y = _score_difference(o)
    c_minus_sp = (o.x0.to(dt) - o.fake.to(dt)) / per_sample(o.sigma, o.x_t).pow(2)
    inner = batch_dot(y, c_minus_sp)
    y_sq = y.flatten(1).pow(2).sum(1)
    r = _ratio(o.log_r, o.x_t)
    moves = torch.ones_like(r) if o.ratio is None else o.ratio.moves.detach().to(r)
    h, rh1, r2h2 = divergence.h(r), moves * divergence.rh_prime(r), moves * divergence.r2_h2(r)
    x_live = o.x_t.to(dt)
    return {
        "sim": 2 * h * inner,
        "ratio_motion": batch_dot((per_sample(-2 * rh1 * inner, o.x_t) * y).detach(), x_live),
        "di": batch_dot((per_sample(r2h2 * y_sq, o.x_t) * y).detach(), x_live),
        "fgm": (h - rh1) * y_sq,
    }


def expanded_loss(outputs: DenoiserOutputs, *, divergence: Divergence, weight: Tensor | float = 1.0) -> Tensor:
    """Expanded form (section 4), all four terms; exact gradient of ``w E_p[h(r) ||s_p - s_q||^2]``.

    ``d_real = D_q(x_t)`` and ``d_fake = D_p(x_t)`` must be evaluated with frozen parameters but a live
    input ``x_t`` (gradient flows through the networks into ``x_t``), and ``x0`` must be live::

        inner = y . (c - s_p)
        L = 2 sg(h) inner                      # SIM term
          + sg(-2 r h' inner y) . x_t          # the ratio moves with x_t: grad log r = -y
          + sg(r^2 h'' ||y||^2 y) . x_t        # DI term
          + sg(h - r h') ||y||^2               # FGM term

    Where the ratio's ``moves`` mask is false (the logit was clamped or non-finite,
    :class:`~uni3d.losses.RatioEstimate`) the ratio used is a constant, so ``h(r)`` does not move with ``x_t``:
    ``h'`` and ``h''`` are zero there and the sample gets ``2 h inner + h ||y||^2``, the exact gradient of
    ``w E_p[h(clamp r) ||s_p - s_q||^2]``.
    """
    terms = expanded_terms(outputs, divergence=divergence)
    return sample_weight(weight, outputs.x_t) * sum(terms.values())


def sid_loss(outputs: DenoiserOutputs, *, alpha: float, weight: Tensor | float = 1.0) -> Tensor:
    """SiD's generator loss in score units: ``w a^T((D_q - x0) - alpha a) / sigma^4``, ``a = D_q - D_p``.

    With the denoisers evaluated on a live ``x_t``: ``alpha = 0.5`` is half the expanded ``rkl`` form
    (section 4), ``alpha = 1`` is SIM with the squared-L2 distance, SiD's default is ``alpha = 1.2``.
    """
    o = outputs
    dt = compute_dtype(o.x0)
    a = o.d_real.to(dt) - o.fake.to(dt)
    loss = batch_dot(a, (o.d_real.to(dt) - o.x0.to(dt)) - alpha * a)
    return sample_weight(weight, o.x0) * loss / per_sample(o.sigma, o.x0).flatten().pow(4)
