"""The radiance field: hash-grid features -> density (with a centre blob bias) and albedo.

``sigma(x) = exp(d(x) + b(x))`` (truncated-gradient exponential, Instant-NGP) where ``d`` is the density head's
output and ``b(x) = blob_density * exp(-|x|^2 / (2 blob_radius^2))`` is Magic3D's initial blob bias, so a fresh
field is a soft ball at the centre. Albedo is ``sigmoid`` of the albedo head. Levels above
``active_levels`` are masked to zero (progressive unmasking, coarse to fine). Normals are
``n = -grad sigma / |grad sigma|``: analytic through the PyTorch hash grid's Jacobian
(:meth:`RadianceField.forward_with_normals`, one encoding pass), else by central finite differences (every
backend, six more field evaluations; no double backward either way).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from uni3d.errors import UsageError
from uni3d.scene.hashgrid import HashGridConfig, make_hash_grid


class _TruncExp(torch.autograd.Function):
    """``exp(x)`` whose backward clamps ``x`` at 15 (Instant-NGP's density activation)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """Exponential with a clamped gradient."""
    return _TruncExp.apply(x)


@dataclass(frozen=True)
class FieldConfig:
    """Field settings; the scene is the cube ``[-bound, bound]^3``."""

    encoding: HashGridConfig = field(default_factory=HashGridConfig)
    hidden: int = 64
    blob_density: float = 10.0
    blob_radius: float = 0.5
    bound: float = 1.0

    def __post_init__(self) -> None:
        if not 4 <= self.hidden <= 1024 or self.bound <= 0 or self.blob_radius <= 0:
            raise UsageError(f"field needs 4 <= hidden <= 1024 and positive bound/blob radius, got {self}")


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, n_out))


class RadianceField(nn.Module):
    """``density(x) -> (N,)`` and ``forward(x) -> (sigma (N,), albedo (N, 3))`` for world points ``x (N, 3)``."""

    def __init__(self, cfg: FieldConfig, backend: str = "torch", compile: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoding = make_hash_grid(cfg.encoding, backend, compile=compile)
        n_feat = self.encoding.n_output_dims
        self.density_head = _mlp(n_feat, cfg.hidden, 1)
        self.albedo_head = _mlp(n_feat, cfg.hidden, 3)
        self.register_buffer("level_mask", torch.ones(cfg.encoding.n_levels))

    @property
    def n_levels(self) -> int:
        return self.cfg.encoding.n_levels

    def set_active_levels(self, n_active: int) -> None:
        """Progressive unmasking: keep the ``n_active`` coarsest levels, zero the rest."""
        n_active = max(1, min(int(n_active), self.n_levels))
        self.level_mask.copy_((torch.arange(self.n_levels) < n_active).float())

    def blob_bias(self, x: torch.Tensor) -> torch.Tensor:
        """``b(x) = blob_density * exp(-|x|^2 / (2 r^2))`` (Magic3D's density bias)."""
        return self.cfg.blob_density * torch.exp(-x.square().sum(-1) / (2 * self.cfg.blob_radius**2))

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x01 = (x / self.cfg.bound + 1) / 2
        feats = self.encoding(x01).view(x.shape[0], self.n_levels, -1) * self.level_mask.view(1, -1, 1)
        return feats.view(x.shape[0], -1)

    def _sigma(self, x: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        sigma = trunc_exp(self.density_head(feats).squeeze(-1) + self.blob_bias(x) - 1.0)
        inside = (x.abs() <= self.cfg.bound).all(-1)
        return sigma * inside

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """Volume density ``sigma(x) >= 0``, zero outside the scene cube."""
        return self._sigma(x, self._features(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self._features(x)
        return self._sigma(x, feats), torch.sigmoid(self.albedo_head(feats))

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        """Albedo in ``[0, 1]^3``."""
        return self.forward(x)[1]

    @property
    def analytic_normals(self) -> bool:
        """Whether the encoding gives its spatial Jacobian (the PyTorch hash grid does; tcnn's does not)."""
        return hasattr(self.encoding, "forward_with_jacobian")

    def forward_with_normals(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(sigma (N,), albedo (N, 3), normals (N, 3))`` from one encoding pass.

        Since ``sigma = exp(g)`` with ``g = d(x) + b(x) - 1``, ``-grad sigma / |grad sigma| = -grad g / |grad g|``;
        ``grad d = W_2 diag(relu'(h)) W_1 J`` through the density MLP, with ``J`` the encoding's analytic Jacobian
        (:meth:`TorchHashGrid.forward_with_jacobian`), and ``grad b = -b(x) x / r^2``. Differentiable in every
        parameter without a double backward; encodings without a Jacobian fall back to :meth:`normals`.
        """
        if not self.analytic_normals:
            sigma, albedo = self.forward(x)
            return sigma, albedo, self.normals(x)
        x01 = (x / self.cfg.bound + 1) / 2
        feats, jac = self.encoding.forward_with_jacobian(x01)
        mask = self.level_mask.repeat_interleave(self.cfg.encoding.n_features)
        feats, jac = feats * mask, jac * (mask / (2 * self.cfg.bound)).view(1, -1, 1)
        first, last = self.density_head[0], self.density_head[2]
        hidden = first(feats)
        d = last(torch.relu(hidden)).squeeze(-1)
        grad_hidden = torch.einsum("hk,nkd->nhd", first.weight, jac) * (hidden > 0).unsqueeze(-1)
        blob = self.blob_bias(x)
        grad = torch.einsum("h,nhd->nd", last.weight[0], grad_hidden) - (blob / self.cfg.blob_radius**2)[:, None] * x
        inside = (x.abs() <= self.cfg.bound).all(-1)
        sigma = trunc_exp(d + blob - 1.0) * inside
        normals = -torch.nn.functional.normalize(grad, dim=-1, eps=1e-8)
        return sigma, torch.sigmoid(self.albedo_head(feats)), normals

    def normals(self, x: torch.Tensor, eps: float = 1e-2) -> torch.Tensor:
        """Outward unit normals ``-grad sigma / |grad sigma|`` by central differences of step ``eps``."""
        offsets = torch.eye(3, device=x.device, dtype=x.dtype) * eps
        pts = torch.cat([x.unsqueeze(1) + offsets, x.unsqueeze(1) - offsets], 1).view(-1, 3)
        sig = self.density(pts).view(-1, 2, 3)
        grad = (sig[:, 0] - sig[:, 1]) / (2 * eps)
        return -torch.nn.functional.normalize(grad, dim=-1, eps=1e-8)
