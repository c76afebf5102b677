"""nerfacc's ``OccGridEstimator`` and weight computation behind the :class:`OccupancyGrid` interface (CUDA only).

Constructed only by :func:`make_estimator` for the resolved ``cuda`` backend, so nerfacc's CUDA code is never
touched on a CPU machine.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from uni3d.errors import UsageError
from uni3d.scene.backend import nerfacc_module
from uni3d.scene.occupancy import OccupancyGrid, RaySamples
from uni3d.scene.volume import DensityFn


class NerfaccEstimator(nn.Module):
    """Same ``update`` / ``sample`` / ``occupied_bounds`` contract as :class:`OccupancyGrid`, run by nerfacc."""

    def __init__(
        self, bound: float = 1.0, resolution: int = 64, render_steps: int = 512, threshold: float = 0.01
    ) -> None:
        super().__init__()
        nerfacc = nerfacc_module()
        if nerfacc is None:
            raise UsageError("the nerfacc estimator needs CUDA and an importable nerfacc; use backend 'torch'")
        self.nerfacc = nerfacc
        self.bound, self.resolution, self.threshold = bound, resolution, threshold
        self.step_size = 2 * math.sqrt(3) * bound / render_steps
        aabb = torch.tensor([-bound] * 3 + [bound] * 3)
        self.estimator = nerfacc.OccGridEstimator(roi_aabb=aabb, resolution=resolution, levels=1)

    @torch.no_grad()
    def update(self, density_fn: DensityFn, warmup: bool = False, chunk: int = 65536) -> None:
        """One nerfacc grid update (``warmup_steps`` makes it refresh every cell while ``warmup``)."""
        self.estimator.update_every_n_steps(
            step=0 if warmup else 10**9,
            occ_eval_fn=lambda x: density_fn(x) * self.step_size,
            occ_thre=self.threshold,
            n=1,
            warmup_steps=1 if warmup else 0,
        )

    def occupied(self, x: torch.Tensor) -> torch.Tensor:
        r = self.resolution
        ijk = ((x / self.bound + 1) / 2 * r).long().clamp(0, r - 1)
        return self.estimator.binaries[0][ijk[:, 0], ijk[:, 1], ijk[:, 2]]

    def occupied_bounds(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        grid = OccupancyGrid(self.bound, self.resolution).to(self.estimator.binaries.device)
        grid.binary.copy_(self.estimator.binaries[0].permute(2, 1, 0).reshape(-1))
        return grid.occupied_bounds()

    @torch.no_grad()
    def sample(
        self, origins: torch.Tensor, dirs: torch.Tensor, sigma_fn: DensityFn | None = None, perturb: bool = False
    ) -> RaySamples:
        def nerfacc_sigma(t_starts: torch.Tensor, t_ends: torch.Tensor, ray_indices: torch.Tensor) -> torch.Tensor:
            mid = (t_starts + t_ends)[:, None] / 2
            return sigma_fn(origins[ray_indices] + mid * dirs[ray_indices])

        return self.estimator.sampling(
            origins,
            dirs,
            sigma_fn=nerfacc_sigma if sigma_fn is not None else None,
            render_step_size=self.step_size,
            stratified=perturb,
            alpha_thre=1e-4 if sigma_fn is not None else 0.0,
            early_stop_eps=1e-4,
        )


def nerfacc_render_weights(
    sigma: torch.Tensor, t_starts: torch.Tensor, t_ends: torch.Tensor, ray_indices: torch.Tensor, n_rays: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """nerfacc's ``render_weight_from_density``: same quadrature and return values as :func:`render_weights`."""
    nerfacc = nerfacc_module()
    assert nerfacc is not None, "the renderer picks these weights only for the cuda backend"
    weights, trans, _ = nerfacc.render_weight_from_density(
        t_starts, t_ends, sigma, ray_indices=ray_indices, n_rays=n_rays
    )
    return weights, trans
