"""The analytic teacher: a ring of Gaussians whose noised marginals are known at every noise level.

``q0 = (1/K) sum_k N(mu_k, s^2 I)`` with ``mu_k = R (cos 2 pi k / K, sin 2 pi k / K)``. VE noise at level
``sigma`` gives ``q_sigma = (1/K) sum_k N(mu_k, (s^2 + sigma^2) I)``, so the log-density, the exact
denoiser ``D(x; sigma) = E[x0 | x_sigma = x]`` and the score ``(D - x) / sigma^2`` are closed form
(METHOD.md section 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from uni3d.errors import UsageError


@dataclass(frozen=True)
class RingTeacher:
    """``n_modes`` isotropic Gaussians of standard deviation ``std`` evenly spaced on a circle of ``radius``."""

    n_modes: int = 8
    radius: float = 2.0
    std: float = 0.1

    def __post_init__(self) -> None:
        if self.n_modes < 1 or self.radius <= 0 or self.std <= 0:
            raise UsageError(
                f"ring teacher needs n_modes >= 1, radius > 0, std > 0; got {self.n_modes}, {self.radius}, {self.std}"
            )

    @property
    def sigma_data(self) -> float:
        """Per-coordinate root mean square of ``q0``: ``sqrt(R^2 / 2 + s^2)`` (EDM's ``sigma_data``)."""
        return math.sqrt(self.radius**2 / 2 + self.std**2)

    def means(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """Mode centres ``[K, 2]``."""
        angle = 2 * math.pi * torch.arange(self.n_modes, dtype=torch.float64) / self.n_modes
        return (self.radius * torch.stack([angle.cos(), angle.sin()], dim=1)).to(dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact samples ``[n, 2]`` of ``q0`` (float32)."""
        k = torch.randint(self.n_modes, (n,), generator=generator)
        return self.means()[k] + self.std * torch.randn(n, 2, generator=generator)

    def _posterior(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(log N(x; mu_k, v I) [B, K], v [B, 1], mu [K, 2])`` with ``v = s^2 + sigma^2``."""
        var = (self.std**2 + sigma.to(x.dtype).reshape(-1, 1).pow(2)).expand(x.shape[0], 1)
        mu = self.means(x.dtype).to(x.device)
        sq = (x.unsqueeze(1) - mu).pow(2).sum(-1)
        return -0.5 * sq / var - torch.log(2 * math.pi * var), var, mu

    def log_prob(self, x: Tensor, sigma: Tensor | float = 0.0) -> Tensor:
        """``log q_sigma(x)`` ``[B]``."""
        log_comp, _, _ = self._posterior(x, torch.as_tensor(sigma))
        return torch.logsumexp(log_comp, dim=1) - math.log(self.n_modes)

    def denoiser(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Exact ``D(x; sigma) = sum_k w_k(x) (mu_k + s^2 / (s^2 + sigma^2) (x - mu_k))`` ``[B, 2]``.

        ``w_k`` is the posterior over modes; differentiable in ``x`` (the expanded form needs a live input).
        """
        log_comp, var, mu = self._posterior(x, sigma)
        w = torch.softmax(log_comp, dim=1)
        shrink = self.std**2 / var
        return shrink * x + (1 - shrink) * (w @ mu)

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``grad log q_sigma(x) = sum_k w_k (mu_k - x) / (s^2 + sigma^2)`` ``[B, 2]`` (finite at ``sigma = 0``)."""
        log_comp, var, mu = self._posterior(x, torch.as_tensor(sigma))
        w = torch.softmax(log_comp, dim=1)
        return (w @ mu - x) / var
