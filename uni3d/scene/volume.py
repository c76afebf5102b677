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

    The exclusive per-ray sum of ``sigma delta`` is a global cumulative sum (float64, so long packs stay exact)
    minus its value at each ray's first sample.
    """
    if len(sigma) == 0:
        return sigma.new_zeros(0), sigma.new_zeros(0)
    tau = sigma * (t_ends - t_starts)
    csum = torch.cumsum(tau.double(), 0)
    exclusive = csum - tau.double()
    first = torch.full((n_rays,), len(tau), dtype=torch.long, device=tau.device)
    first.scatter_reduce_(0, ray_indices, torch.arange(len(tau), device=tau.device), "amin")
    trans = torch.exp(-(exclusive - exclusive[first[ray_indices]])).to(tau.dtype)
    return trans * (1 - torch.exp(-tau)), trans


def accumulate(
    weights: torch.Tensor, values: torch.Tensor | None, ray_indices: torch.Tensor, n_rays: int
) -> torch.Tensor:
    """Per-ray ``sum_i w_i v_i`` as ``(n_rays, C)``; ``values=None`` sums the weights (opacity, ``(n_rays, 1)``)."""
    src = weights.unsqueeze(-1) if values is None else weights.unsqueeze(-1) * values
    out = torch.zeros(n_rays, src.shape[-1], dtype=src.dtype, device=src.device)
    return out.index_add(0, ray_indices, src)
