"""Multiresolution hash-grid encoding (Müller et al. 2022, Instant-NGP, eqs. 3-4) with two backends.

Level ``l`` has scale ``N_l = N_min * b**l`` with growth ``b = exp((ln N_max - ln N_min) / (L - 1))``.
A point's feature at level ``l`` is the trilinear interpolation of the ``2**3`` surrounding grid-vertex
features; a vertex indexes its level's table directly when the level fits in ``T`` rows, else through
the spatial hash ``h(x) = (x_1 * 1 XOR x_2 * 2654435761 XOR x_3 * 805459861) mod T``. The output concatenates the
``L`` levels, ``F`` features each, in level order, so a level mask can be applied by the caller.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from uni3d.errors import UsageError
from uni3d.scene.backend import tinycudann_module

_PRIMES = (1, 2654435761 - 2**32, 805459861)  # int32 views of the uint32 primes


@dataclass(frozen=True)
class HashGridConfig:
    """Instant-NGP hash-grid settings (the paper's ``L``, ``F``, ``log2 T``, ``N_min``, ``N_max``)."""

    n_levels: int = 16
    n_features: int = 2
    log2_table_size: int = 19
    base_resolution: int = 16
    max_resolution: int = 2048

    def __post_init__(self) -> None:
        if not 1 <= self.n_levels <= 32 or not 1 <= self.n_features <= 8:
            raise UsageError(f"hash grid needs 1-32 levels and 1-8 features, got {self.n_levels}, {self.n_features}")
        if not 8 <= self.log2_table_size <= 24:
            raise UsageError(f"hash grid log2 table size must be 8-24, got {self.log2_table_size}")
        if not 2 <= self.base_resolution <= self.max_resolution <= 65536:
            raise UsageError(
                f"hash grid resolutions must satisfy 2 <= base <= max <= 65536, "
                f"got {self.base_resolution}, {self.max_resolution}"
            )

    @property
    def growth(self) -> float:
        """Per-level scale ``b`` (eq. 3)."""
        if self.n_levels == 1:
            return 1.0
        return math.exp((math.log(self.max_resolution) - math.log(self.base_resolution)) / (self.n_levels - 1))

    @property
    def n_output_dims(self) -> int:
        return self.n_levels * self.n_features


class _Gather(torch.autograd.Function):
    """``table[idx]`` whose backward is one ``index_add_`` (about 3x faster on CPU than embedding's backward)."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(idx)
        ctx.n_rows = table.shape[0]
        return table.index_select(0, idx)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (idx,) = ctx.saved_tensors
        out = torch.zeros(ctx.n_rows, grad.shape[1], dtype=grad.dtype, device=grad.device)
        return out.index_add_(0, idx, grad), None


def _single_threaded_inductor() -> None:
    """Inductor's CPU kernels on one thread (process-wide). With OpenMP threads and another job on the cores,
    each of the many small compiled kernels waits for a descheduled thread, and compiled becomes slower than
    eager; on one thread it is faster (``uni3d bench scene``, docs/benchmarks.md)."""
    import torch._inductor.config as inductor_config

    inductor_config.cpp.threads = 1


class TorchHashGrid(nn.Module):
    """Pure-PyTorch hash grid: ``forward(x01: (N, 3) in [0, 1]) -> (N, L * F)``; optional ``torch.compile``.

    Follows tinycudann's layout so the two backends agree given the same table: level scale
    ``s_l = N_min * b**l - 1``, grid position ``x * s_l + 0.5``, level resolution ``ceil(s_l) + 1``, table rows
    per level ``min(next_multiple_of_8(res**3), T)``, index modulo the level's row count. Hashing is done in
    int32 (wrap-around multiply), whose low bits equal the uint32 hash.
    """

    def __init__(self, cfg: HashGridConfig, compile: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        table_cap = 2**cfg.log2_table_size
        scale = [cfg.base_resolution * cfg.growth**level - 1.0 for level in range(cfg.n_levels)]
        res = [math.ceil(s) + 1 for s in scale]
        sizes = [min(-(-(r**3) // 8) * 8, table_cap) for r in res]
        offsets = [0]
        for size in sizes:
            offsets.append(offsets[-1] + size)
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32), persistent=False)
        self.register_buffer("stride", torch.tensor(res, dtype=torch.int32), persistent=False)
        self.register_buffer("level_size", torch.tensor(sizes, dtype=torch.int32), persistent=False)
        self.register_buffer("level_offset", torch.tensor(offsets[:-1], dtype=torch.int32), persistent=False)
        self.register_buffer("dense", torch.tensor([r**3 <= table_cap for r in res]), persistent=False)
        self.table = nn.Parameter(torch.empty(offsets[-1], cfg.n_features).uniform_(-1e-4, 1e-4))
        if compile:
            _single_threaded_inductor()
        self._compiled = torch.compile(self._encode_eager, dynamic=True) if compile else None
        self._compiled_ok = False

    @property
    def n_output_dims(self) -> int:
        return self.cfg.n_output_dims

    def _corners(self, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Table rows ``(N, L, 8)`` of the 8 corners, their trilinear weights ``(N, L, 8)`` and the per-axis
        weight factors ``w (N, L, 3, 2)`` (``1 - frac``, ``frac``) the weights are products of."""
        n, n_levels = x01.shape[0], self.cfg.n_levels
        pos = x01.clamp(0.0, 1.0).unsqueeze(1) * self.scale.view(1, -1, 1) + 0.5  # (N, L, 3)
        base = pos.floor()
        frac = pos - base
        grid = base.to(torch.int32)
        shape = [(n, n_levels, 2, 1, 1), (n, n_levels, 1, 2, 1), (n, n_levels, 1, 1, 2)]
        stride = self.stride.view(1, -1, 1)
        lin, hashed, weight, factors = 0, 0, 1, []
        for d in range(3):
            v = torch.stack([grid[..., d], grid[..., d] + 1], -1)  # (N, L, 2) the two corners along axis d
            lin = lin + (v * stride**d).view(shape[d])
            hashed = hashed ^ (v * _PRIMES[d]).view(shape[d])
            w = torch.stack([1 - frac[..., d], frac[..., d]], -1)
            factors.append(w)
            weight = weight * w.view(shape[d])
        idx = torch.where(self.dense.view(1, -1, 1, 1, 1), lin, hashed).view(n, n_levels, 8)
        idx = idx.remainder(self.level_size.view(1, -1, 1)) + self.level_offset.view(1, -1, 1)
        return idx, weight.reshape(n, n_levels, 8), torch.stack(factors, 2)

    def _encode_eager(self, x01: torch.Tensor) -> torch.Tensor:
        idx, weight, _ = self._corners(x01)
        n, n_levels = idx.shape[:2]
        feats = _Gather.apply(self.table, idx.reshape(-1).long()).view(n, n_levels, 8, -1)
        return (feats * weight.unsqueeze(-1)).sum(2).reshape(n, -1)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        """Encode ``x01``; compiled when asked, falling back to eager (with a warning) if the first compiled call
        fails, e.g. on a machine without the C++ compiler inductor needs."""
        if self._compiled is None:
            return self._encode_eager(x01)
        if self._compiled_ok:
            return self._compiled(x01)
        try:
            out = self._compiled(x01)
        except Exception as err:  # inductor raises several types (missing compiler, unsupported op, ...)
            warnings.warn(f"torch.compile of the hash grid failed ({type(err).__name__}); running eager", stacklevel=2)
            self._compiled = None
            return self._encode_eager(x01)
        self._compiled_ok = True
        return out

    def forward_with_jacobian(self, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``(N, L * F)`` and their analytic spatial Jacobian ``d feats / d x01`` ``(N, L * F, 3)``.

        The trilinear weight of corner ``c`` is ``prod_d w_d(c_d)`` with ``w_d = 1 - frac_d`` or ``frac_d`` and
        ``d frac_d / d x01_d = s_l``, so ``d weight / d x01_d = +-s_l prod_{e != d} w_e``; both outputs come from
        one table gather and stay differentiable in the table (no double backward; zero outside ``[0, 1]``
        where the position is clamped).
        """
        idx, weight, w = self._corners(x01)
        n, n_levels = idx.shape[:2]
        feats = _Gather.apply(self.table, idx.reshape(-1).long()).view(n, n_levels, 8, -1)
        sign = torch.tensor([-1.0, 1.0], dtype=w.dtype, device=w.device)
        wx, wy, wz = w[:, :, 0], w[:, :, 1], w[:, :, 2]  # (N, L, 2) each
        outer = "nli,nlj,nlk->nlijk"
        dw = torch.stack(
            [
                torch.einsum(outer, sign.expand_as(wx), wy, wz),
                torch.einsum(outer, wx, sign.expand_as(wy), wz),
                torch.einsum(outer, wx, wy, sign.expand_as(wz)),
            ],
            -1,
        ).reshape(n, n_levels, 8, 3) * self.scale.view(1, -1, 1, 1)
        inside = ((x01 >= 0) & (x01 <= 1)).to(x01.dtype).view(n, 1, 1, 3)
        jac = torch.einsum("nlcf,nlcd->nlfd", feats, dw * inside)
        out = (feats * weight.unsqueeze(-1)).sum(2)
        return out.reshape(n, -1), jac.reshape(n, -1, 3)


class TcnnHashGrid(nn.Module):
    """tinycudann's fused hash grid with the same interface and level layout (CUDA only)."""

    def __init__(self, cfg: HashGridConfig) -> None:
        super().__init__()
        tcnn = tinycudann_module()
        if tcnn is None:
            raise UsageError("the tinycudann hash grid needs CUDA and an importable tinycudann; use backend 'torch'")
        self.cfg = cfg
        self.encoding = tcnn.Encoding(
            3,
            {
                "otype": "HashGrid",
                "n_levels": cfg.n_levels,
                "n_features_per_level": cfg.n_features,
                "log2_hashmap_size": cfg.log2_table_size,
                "base_resolution": cfg.base_resolution,
                "per_level_scale": cfg.growth,
                "interpolation": "Linear",
            },
            dtype=torch.float32,
        )

    @property
    def n_output_dims(self) -> int:
        return self.cfg.n_output_dims

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.encoding(x01.clamp(0.0, 1.0)).float()


def make_hash_grid(cfg: HashGridConfig, backend: str, compile: bool = False) -> nn.Module:
    """The encoding for a resolved backend (``"torch"`` or ``"cuda"``; see :func:`resolve_backend`)."""
    return TcnnHashGrid(cfg) if backend == "cuda" else TorchHashGrid(cfg, compile=compile)
