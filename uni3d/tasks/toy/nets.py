"""The toy's networks: an EDM-preconditioned MLP denoiser, the one-step generator built from it, a ratio head."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from uni3d.diffusion.edm import Preconditioning, preconditioning


def mlp(n_in: int, n_out: int, width: int, depth: int) -> nn.Sequential:
    """``depth`` hidden SiLU layers of ``width`` units; the last layer starts at zero (output 0 at init)."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(n_in if i == 0 else width, width), nn.SiLU()]
    last = nn.Linear(width if depth else n_in, n_out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


def _coefficients(x: Tensor, sigma: Tensor, sigma_data: float) -> Preconditioning:
    """EDM coefficients as ``[B, 1]`` columns in the dtype of ``x``."""
    return preconditioning(sigma.reshape(-1, 1).to(x.dtype), sigma_data)


def _features(x: Tensor, pre: Preconditioning) -> Tensor:
    """Network input ``[c_in x, c_noise]`` (EDM Table 1): unit-scale at every noise level."""
    return torch.cat([pre.c_in * x, pre.c_noise], dim=1)


class EDMDenoiser(nn.Module):
    """``D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)`` for points ``x [B, 2]`` (EDM eq. 7, Table 1)."""

    def __init__(self, sigma_data: float, width: int = 128, depth: int = 4, dim: int = 2) -> None:
        super().__init__()
        self.sigma_data = sigma_data
        self.net = mlp(dim + 1, dim, width, depth)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        pre = _coefficients(x, sigma, self.sigma_data)
        return pre.c_skip * x + pre.c_out * self.net(_features(x, pre))


class OneStepGenerator(nn.Module):
    """SiD's generator ``G(z) = D(sigma_init z; sigma_init)``, initialised as a copy of a denoiser."""

    def __init__(self, denoiser: EDMDenoiser, sigma_init: float) -> None:
        super().__init__()
        self.denoiser = copy.deepcopy(denoiser)
        self.sigma_init = sigma_init

    def forward(self, z: Tensor) -> Tensor:
        sigma = torch.full((z.shape[0],), self.sigma_init, dtype=z.dtype, device=z.device)
        return self.denoiser(self.sigma_init * z, sigma)


class MlpRatioHead(nn.Module):
    """Logit ``l(x_t, sigma)`` of the discriminator whose optimum is ``log(q_sigma / p_sigma)`` (METHOD.md 5)."""

    def __init__(self, sigma_data: float, width: int = 128, depth: int = 3, dim: int = 2) -> None:
        super().__init__()
        self.sigma_data = sigma_data
        self.net = mlp(dim + 1, 1, width, depth)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.net(_features(x, _coefficients(x, sigma, self.sigma_data))).squeeze(1)
