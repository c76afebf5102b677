"""Backgrounds: ``forward(dirs (N, 3)) -> colours (N, 3)``, composited as ``rgb + (1 - opacity) * background``."""

from __future__ import annotations

import torch
from torch import nn

from uni3d.errors import UsageError

BACKGROUNDS = ("solid", "random", "mlp")


class SolidBackground(nn.Module):
    """One fixed colour."""

    def __init__(self, color: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
        super().__init__()
        self.register_buffer("color", torch.tensor(color, dtype=torch.float32))

    def forward(self, dirs: torch.Tensor) -> torch.Tensor:
        return self.color.to(dirs.dtype).expand(dirs.shape[0], 3)


class RandomColorBackground(nn.Module):
    """A uniform random colour per ray while training (forces the opacity to be right), ``eval_color`` in eval."""

    def __init__(self, eval_color: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
        super().__init__()
        self.register_buffer("eval_color", torch.tensor(eval_color, dtype=torch.float32))

    def forward(self, dirs: torch.Tensor) -> torch.Tensor:
        if self.training:
            return torch.rand(dirs.shape[0], 3, dtype=dirs.dtype, device=dirs.device)
        return self.eval_color.to(dirs.dtype).expand(dirs.shape[0], 3)


class MLPEnvironment(nn.Module):
    """A small learned environment map: ``sigmoid(MLP(direction))``."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 3))

    def forward(self, dirs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(dirs))


def make_background(kind: str, color: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> nn.Module:
    """``solid`` | ``random`` | ``mlp``."""
    if kind == "solid":
        return SolidBackground(color)
    if kind == "random":
        return RandomColorBackground(color)
    if kind == "mlp":
        return MLPEnvironment()
    raise UsageError(f"unknown background {kind!r}; choose one of {', '.join(BACKGROUNDS)}")
