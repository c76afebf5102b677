"""Density-ratio heads (METHOD.md section 5): a logit ``l`` trained by balanced BCE
(:func:`uni3d.losses.discriminator_loss`), whose optimum is ``log(q_t / p_t)``, so ``r = exp(l)``.

Each reads the features its task has at hand, detached, so a head never changes the network it reads:
:class:`ConvRatioHead` the image fake score's bottleneck, :class:`PooledRatioHead` the LoRA UNet's mid-block
features with ``log sigma``. (The 2-D toy's head reads ``x_t`` itself: ``uni3d.tasks.toy.nets.MlpRatioHead``.)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ConvRatioHead(nn.Module):
    """Logit ``l(x_t, sigma)`` from the fake score's bottleneck ``[B, C, h, w]``: conv, SiLU, mean pool, linear.

    Trained by balanced BCE, its optimum is ``log(q_sigma / p_sigma)`` (METHOD.md section 5). The features
    come detached from the fake score, so the head never changes the fake-score network.
    """

    def __init__(self, channels: int, width: int = 64) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, width, 3, padding=1)
        self.linear = nn.Linear(width, 1)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(torch.nn.functional.silu(self.conv(features)).mean(dim=(2, 3))).squeeze(1)


class PooledRatioHead(nn.Module):
    """Logit ``l(features, sigma)``: average-pooled mid-block features and ``log sigma`` through a small MLP."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(channels + 1, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, features: Tensor, sigma: Tensor) -> Tensor:
        pooled = features.float().mean((2, 3))
        return self.net(torch.cat([pooled, sigma.float().log().unsqueeze(-1) / 4], -1)).squeeze(-1)
