"""Shared fixtures: tiny frozen "networks" whose outputs depend on a live input, as the loss module expects."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class TinyDenoiser(nn.Module):
    """A seeded conv denoiser ``D(x; sigma)`` for image-shaped tests (parameters frozen by the caller)."""

    def __init__(self, channels: int, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        with torch.no_grad():
            for p in self.conv.parameters():
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.reshape(-1, 1, 1, 1)
        return x / (1 + s**2) + torch.tanh(self.conv(x)) * s / (1 + s)


@pytest.fixture
def denoisers() -> tuple[TinyDenoiser, TinyDenoiser]:
    """(teacher D_q, fake D_p) with frozen float64 parameters."""
    nets = (TinyDenoiser(3, 0).double(), TinyDenoiser(3, 1).double())
    for net in nets:
        net.requires_grad_(False)
    return nets
