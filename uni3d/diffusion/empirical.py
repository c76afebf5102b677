"""The exact denoiser of an empirical distribution: a fake score that needs no training (METHOD.md section 3).

For ``q`` the empirical distribution of samples ``x0_1 .. x0_K`` noised in VE units, ``x_t = x0 + sigma n``, the
marginal at ``sigma`` is a Gaussian mixture and its denoiser ``D(x_t) = E[x0 | x_t]`` is the softmax-weighted mean

    D(x_t) = sum_k w_k x0_k,    w_k ∝ exp(-||x_t - x0_k||^2 / (2 sigma^2)),

so its score ``(D - x_t) / sigma^2`` is the exact score of ``q_sigma``. VSD's fake score estimates exactly this
for the distribution of the particles' renders; with the renders of all particles at the same camera it is
available in closed form. With one sample it is that sample (``D = x0``), SDS's ``c`` in place of the fake score;
at high noise it is the particles' mean, so the gradient moves the particles' mean towards the teacher and a
particle near another is pushed away from it (the repulsion VSD's learned fake score has to learn first).
"""

from __future__ import annotations

import torch
from torch import Tensor


def empirical_denoise(x_t: Tensor, sigma: Tensor, x0: Tensor, *, groups: int) -> Tensor:
    """``D(x_t)`` of the empirical distribution of ``groups`` samples per view.

    Args:
        x_t: ``(groups * n, ...)`` noisy samples, group-major (row ``g n + v`` is group ``g`` at view ``v``);
            differentiable (the expanded form reads the denoiser's Jacobian).
        sigma: ``(groups * n,)`` VE noise level of each row.
        x0: ``(groups * n, ...)`` the clean samples in the same layout; row ``g n + v``'s candidates are the rows
            ``k n + v`` for every group ``k`` (the samples seen from the same view). Used as constants.

    Returns:
        ``(groups * n, ...)``: the mixture's posterior mean for each row.
    """
    if len(x_t) != len(x0) or len(x_t) % groups:
        raise ValueError(f"x_t ({len(x_t)}) and x0 ({len(x0)}) must both hold {groups} groups of the same views")
    n = len(x0) // groups
    clean = x0.detach().reshape(groups, n, -1)  # (K, n, D)
    noisy = x_t.reshape(groups, n, -1)  # (G, n, D)
    # ||x_t[g, v] - x0[k, v]||^2 for every pair of groups at the same view: (G, K, n)
    dist = (noisy.unsqueeze(1) - clean.unsqueeze(0)).pow(2).sum(-1)
    var = sigma.reshape(groups, 1, n).to(dist.dtype).pow(2)
    weights = torch.softmax(-dist / (2 * var), dim=1)
    mean = torch.einsum("gkn,knd->gnd", weights, clean)
    return mean.reshape(x_t.shape)
