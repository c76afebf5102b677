"""Occupancy grid and AABB ray marching in pure PyTorch (the CPU twin of nerfacc's ``OccGridEstimator``).

A cell is occupied when the opacity of one render step through it, ``1 - exp(-sigma * dt)`` ~ ``sigma * dt``,
exceeds ``min(mean, threshold)`` of the running (EMA-decayed max) cell values, as in nerfacc. Marching takes
steps of fixed length ``dt`` between a ray's AABB entry and exit, keeps the steps whose midpoint is in an
occupied cell, then (given ``sigma_fn``) drops steps with opacity below ``alpha_thre`` or behind transmittance
below ``early_stop_eps`` (the same no-grad pruning pass nerfacc makes).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from uni3d.errors import UsageError
from uni3d.scene.volume import DensityFn, exclusive_ray_sum

RaySamples = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""Packed samples ``(ray_indices (S,), t_starts (S,), t_ends (S,))``, sorted by ray then distance."""


def ray_aabb(origins: torch.Tensor, dirs: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab test against ``[-bound, bound]^3``: entry and exit distances ``(N,)``; exit <= entry means a miss."""
    inv = 1.0 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t_a, t_b = (-bound - origins) * inv, (bound - origins) * inv
    return torch.minimum(t_a, t_b).amax(-1), torch.maximum(t_a, t_b).amin(-1)


class OccupancyGrid(nn.Module):
    """``resolution^3`` occupancy over ``[-bound, bound]^3`` plus the ray marcher that uses it."""

    def __init__(
        self,
        bound: float = 1.0,
        resolution: int = 64,
        render_steps: int = 512,
        threshold: float = 0.01,
        ema_decay: float = 0.95,
        alpha_thre: float = 1e-4,
        early_stop_eps: float = 1e-4,
    ) -> None:
        super().__init__()
        if not 4 <= resolution <= 512 or not 8 <= render_steps <= 8192:
            raise UsageError(
                f"occupancy resolution must be 4-512 and render steps 8-8192, got {resolution}, {render_steps}"
            )
        self.bound, self.resolution = bound, resolution
        self.step_size = 2 * math.sqrt(3) * bound / render_steps
        self.threshold, self.ema_decay = threshold, ema_decay
        self.alpha_thre, self.early_stop_eps = alpha_thre, early_stop_eps
        self.register_buffer("cell_value", torch.zeros(resolution**3))
        self.register_buffer("binary", torch.ones(resolution**3, dtype=torch.bool))

    def cell_centers(self, idx: torch.Tensor, jitter: bool) -> torch.Tensor:
        """World positions of cells ``idx`` (flat, x fastest), at the centre or uniformly inside."""
        r = self.resolution
        ijk = torch.stack([idx % r, (idx // r) % r, idx // (r * r)], -1).float()
        offset = torch.rand_like(ijk) if jitter else torch.full_like(ijk, 0.5)
        return ((ijk + offset) / r * 2 - 1) * self.bound

    def cell_index(self, x: torch.Tensor) -> torch.Tensor:
        """Flat cell index of world points ``x (N, 3)`` (clamped to the grid)."""
        r = self.resolution
        ijk = ((x / self.bound + 1) / 2 * r).long().clamp(0, r - 1)
        return ijk[:, 0] + ijk[:, 1] * r + ijk[:, 2] * r * r

    @torch.no_grad()
    def update(self, density_fn: DensityFn, warmup: bool = False, chunk: int = 65536) -> None:
        """Refresh cell values: every cell while ``warmup``, else a random quarter plus a quarter of the occupied."""
        n = self.resolution**3
        if warmup:
            idx = torch.arange(n, device=self.binary.device)
        else:
            rand = torch.randint(0, n, (n // 4,), device=self.binary.device)
            occ = self.binary.nonzero().squeeze(-1)
            idx = torch.cat([rand, occ[torch.randint(0, len(occ), (n // 4,), device=occ.device)]]) if len(occ) else rand
        values = torch.cat([density_fn(self.cell_centers(c, jitter=True)) for c in idx.split(chunk)]) * self.step_size
        decayed = self.cell_value[idx] * self.ema_decay  # nerfacc: max(decayed old value, new value)
        self.cell_value.index_copy_(0, idx, decayed)
        self.cell_value.scatter_reduce_(0, idx, values, "amax")
        positive = self.cell_value[self.cell_value > 0]
        thre = min(positive.mean().item(), self.threshold) if len(positive) else self.threshold
        self.binary.copy_(self.cell_value > thre)

    def occupied(self, x: torch.Tensor) -> torch.Tensor:
        """Whether world points ``x (N, 3)`` fall in occupied cells, ``(N,)`` bool."""
        return self.binary[self.cell_index(x)]

    def occupied_bounds(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """World-space ``(lo, hi)`` corners of the occupied cells' bounding box, ``None`` when nothing is occupied."""
        idx = self.binary.nonzero().squeeze(-1)
        if len(idx) == 0:
            return None
        cells = self.cell_centers(idx, jitter=False)
        half = self.bound / self.resolution
        return cells.amin(0) - half, cells.amax(0) + half

    @torch.no_grad()
    def sample(
        self,
        origins: torch.Tensor,
        dirs: torch.Tensor,
        sigma_fn: DensityFn | None = None,
        perturb: bool = False,
        segment: int = 32,
    ) -> RaySamples:
        """March rays ``(N, 3)`` through occupied cells; returns packed ``(ray_indices, t_starts, t_ends)``.

        Given ``sigma_fn`` the march goes front to back ``segment`` steps at a time and a ray stops once its
        transmittance is below ``early_stop_eps``, so the density is not evaluated behind opaque surfaces (what
        nerfacc's CUDA marcher does per ray); the kept samples are the same as pruning one full march.
        """
        t_near, t_far = ray_aabb(origins, dirs, self.bound)
        t_near = t_near.clamp(min=0.0)
        hit = (t_far > t_near).nonzero().squeeze(-1)
        if len(hit) == 0:
            return self._empty(origins)
        n_steps = int(((t_far[hit] - t_near[hit]) / self.step_size).ceil().max().item())
        u = (
            torch.rand(len(hit), device=origins.device)
            if perturb
            else torch.full((len(hit),), 0.5, device=origins.device)
        )
        if sigma_fn is None:
            row, t = self._march(origins, dirs, hit, u, t_near, t_far, 0, n_steps)
            return hit[row], t - self.step_size / 2, t + self.step_size / 2
        log_trans = torch.zeros(len(hit), dtype=torch.float64, device=origins.device)  # -log T per live ray
        kept_rays, kept_t = [], []
        for start in range(0, n_steps, segment):
            row, t = self._march(origins, dirs, hit, u, t_near, t_far, start, min(start + segment, n_steps))
            rays = hit[row]
            if len(rays):
                sigma = sigma_fn(origins[rays] + t[:, None] * dirs[rays])
                tau = sigma.double() * self.step_size
                trans = torch.exp(-(log_trans[row] + exclusive_ray_sum(tau, row, len(hit))))
                alpha = 1 - torch.exp(-sigma * self.step_size)
                keep = (alpha > self.alpha_thre) & (trans > self.early_stop_eps)
                kept_rays.append(rays[keep])
                kept_t.append(t[keep])
                log_trans.index_add_(0, row, tau)
            ahead = t_near[hit] + (start + segment) * self.step_size < t_far[hit]
            live = (torch.exp(-log_trans) > self.early_stop_eps) & ahead
            hit, u, log_trans = hit[live], u[live], log_trans[live]
            if len(hit) == 0:
                break
        if not kept_rays:
            return self._empty(origins)
        rays, t = torch.cat(kept_rays), torch.cat(kept_t)
        order = torch.argsort(rays, stable=True)  # segments are in distance order: sort by ray, keep that order
        rays, t = rays[order], t[order]
        return rays, t - self.step_size / 2, t + self.step_size / 2

    def _march(
        self,
        origins: torch.Tensor,
        dirs: torch.Tensor,
        hit: torch.Tensor,
        u: torch.Tensor,
        t_near: torch.Tensor,
        t_far: torch.Tensor,
        first: int,
        last: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps ``first..last-1`` of rays ``hit`` whose midpoints fall in occupied cells: each sample's position
        in ``hit`` and its midpoint ``t``, sorted by ray, then distance."""
        steps = torch.arange(first, last, device=origins.device)
        t_mid = t_near[hit, None] + (steps + u[:, None]) * self.step_size
        row, col = (t_mid < t_far[hit, None]).nonzero(as_tuple=True)
        t = t_mid[row, col]
        keep = self.occupied(origins[hit[row]] + t[:, None] * dirs[hit[row]])
        return row[keep], t[keep]

    def _empty(self, like: torch.Tensor) -> RaySamples:
        empty = like.new_zeros(0)
        return empty.long(), empty, empty
