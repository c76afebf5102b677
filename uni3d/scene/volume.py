"""Volume-rendering quadrature on packed samples (Max 1995; NeRF, Mildenhall et al. 2020, eq. 3).

For the samples ``i`` of one ray, with densities ``sigma_i`` on intervals of length ``delta_i``:
``alpha_i = 1 - exp(-sigma_i delta_i)``, ``T_i = exp(-sum_{j<i} sigma_j delta_j)``, ``w_i = T_i alpha_i``;
a per-sample value ``v_i`` renders as ``sum_i w_i v_i`` and the opacity is ``sum_i w_i``. Samples are packed
(``ray_indices`` sorted, samples of a ray in order of distance), as nerfacc packs them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

DensityFn = Callable[[torch.Tensor], torch.Tensor]
"""World points ``(N, 3)`` -> densities ``(N,)``."""


def render_weights(
    sigma: torch.Tensor, t_starts: torch.Tensor, t_ends: torch.Tensor, ray_indices: torch.Tensor, n_rays: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``w_i = T_i alpha_i`` and transmittances ``T_i``, each ``(S,)`` (eq. 3 quadrature).

    ``T_i = exp(-sum_{j<i} sigma_j delta_j)`` over the ray's earlier samples (:func:`exclusive_ray_sum`).
    """
    if len(sigma) == 0:
        return sigma.new_zeros(0), sigma.new_zeros(0)
    tau = sigma * (t_ends - t_starts)
    trans = torch.exp(-exclusive_ray_sum(tau.double(), ray_indices, n_rays)).to(tau.dtype)
    return trans * (1 - torch.exp(-tau)), trans


def exclusive_ray_sum(tau: torch.Tensor, ray_indices: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Per-ray exclusive prefix sums ``sum_{j<i} tau_j`` of packed samples sorted by ray: a global cumulative
    sum minus its value at each ray's first sample (pass float64 so long packs stay exact)."""
    csum = torch.cumsum(tau, 0)
    exclusive = csum - tau
    first = torch.full((n_rays,), len(tau), dtype=torch.long, device=tau.device)
    first.scatter_reduce_(0, ray_indices, torch.arange(len(tau), device=tau.device), "amin")
    return exclusive - exclusive[first[ray_indices]]


def accumulate(
    weights: torch.Tensor, values: torch.Tensor | None, ray_indices: torch.Tensor, n_rays: int
) -> torch.Tensor:
    """Per-ray ``sum_i w_i v_i`` as ``(n_rays, C)``; ``values=None`` sums the weights (opacity, ``(n_rays, 1)``)."""
    src = weights.unsqueeze(-1) if values is None else weights.unsqueeze(-1) * values
    out = torch.zeros(n_rays, src.shape[-1], dtype=src.dtype, device=src.device)
    return out.index_add(0, ray_indices, src)
