"""Denoising loss of the online fake-score network ``D_p`` (METHOD.md section 7), trained on ``sg(x0)``."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from uni3d.errors import UsageError
from uni3d.losses._tensors import compute_dtype, per_sample


def fake_score_loss(
    d_pred: Tensor,
    x0: Tensor,
    sigma: Tensor,
    weighting: Literal["edm", "eps"] = "edm",
    sigma_data: float = 0.5,
) -> Tensor:
    """Per-sample denoising loss ``[B]``: ``lambda(sigma) * mean ||D(x0 + sigma n) - x0||^2``.

    ``edm``: ``lambda = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2`` (EDM eq. 8, Table 1).
    ``eps``: ``lambda = 1 / sigma^2``, i.e. ``||eps_hat - eps||^2`` (DDPM / Stable Diffusion).
    ``x0`` is detached: the generator never receives gradient from this loss.
    """
    dt = compute_dtype(d_pred)
    s = per_sample(sigma, d_pred).flatten()
    if weighting == "edm":
        lam = (s.pow(2) + sigma_data**2) / (s * sigma_data).pow(2)
    elif weighting == "eps":
        lam = s.pow(-2)
    else:
        raise UsageError(f"unknown fake-score weighting {weighting!r}; valid: edm, eps")
    err = (d_pred.to(dt) - x0.detach().to(dt)).pow(2).flatten(1).mean(1)
    return lam * err
