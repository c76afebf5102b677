"""A small UNet ``F(x_in, c_noise, class)`` for 32x32 images: the raw network inside EDM's preconditioning.

Layout (a reduced DDPM++ / EDM "DhariwalUNet"): a noise embedding (sinusoidal features of ``c_noise``,
EDM's positional embedding, then an MLP) plus an optional class embedding conditions every residual block
through a per-channel scale and shift; the encoder halves the resolution between levels; the bottleneck
(lowest resolution, after the middle blocks) is exposed for the ratio head (METHOD.md section 5); the
decoder concatenates the encoder skips. The output layer starts at zero, so ``F = 0`` at initialisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uni3d.config import build_config


@dataclass(frozen=True)
class UNetConfig:
    """Architecture; saved with every checkpoint so a network can be rebuilt from its file."""

    in_channels: int = 1
    resolution: int = 32
    """Image height and width the network is made for (checked against the data)."""
    channels: tuple[int, ...] = (32, 64, 96)
    blocks_per_level: int = 1
    emb_dim: int = 128
    num_classes: int = 0
    """0: unconditional; otherwise class labels ``[B]`` in ``[0, num_classes)`` condition the network."""

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> UNetConfig:
        return build_config(cls, data, "unet")


def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


def positional_embedding(c_noise: Tensor, dim: int, max_positions: int = 10000) -> Tensor:
    """EDM's ``PositionalEmbedding``: ``[cos(c f_i), sin(c f_i)]``, ``f_i = (1 / max_positions)^(i / (dim/2 - 1))``."""
    half = dim // 2
    freqs = (1.0 / max_positions) ** (torch.arange(half, dtype=torch.float32, device=c_noise.device) / (half - 1))
    angles = c_noise.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=1).to(c_noise.dtype)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice; the embedding sets a scale and shift after the second norm; residual skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
        return (self.skip(x) + h) / math.sqrt(2)


class UNet(nn.Module):
    """``forward(x_in, c_noise, class_labels) -> (output, bottleneck)`` for ``x_in [B, C, H, W]``, ``H, W``
    divisible by ``2^(levels - 1)``; the bottleneck is ``[B, channels[-1], H / 2^(levels-1), W / 2^(levels-1)]``."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        if cfg.resolution < 1 or cfg.resolution % 2 ** (len(cfg.channels) - 1):
            raise ValueError(f"resolution {cfg.resolution} is not divisible by 2^{len(cfg.channels) - 1}")
        self.cfg = cfg
        ch, e = cfg.channels, cfg.emb_dim
        self.map = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e), nn.SiLU())
        self.label = nn.Embedding(cfg.num_classes, e) if cfg.num_classes else None
        self.stem = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.down = nn.ModuleList()
        skips = [ch[0]]
        c = ch[0]
        for level, width in enumerate(ch):
            if level > 0:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
            for _ in range(cfg.blocks_per_level):
                self.down.append(ResBlock(c, width, e))
                c = width
                skips.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, e), ResBlock(c, c, e)])
        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(ch))):
            for _ in range(cfg.blocks_per_level + 1):
                self.up.append(ResBlock(c + skips.pop(), width, e))
                c = width
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.out_norm = nn.GroupNorm(_groups(c), c)
        self.out = nn.Conv2d(c, cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def embedding(self, c_noise: Tensor, class_labels: Tensor | None) -> Tensor:
        """Noise (and class) embedding ``[B, emb_dim]`` that conditions every block."""
        emb = positional_embedding(c_noise, self.cfg.emb_dim)
        if self.label is not None:
            if class_labels is None:
                raise ValueError("this network is class-conditional: pass class_labels")
            emb = emb + self.label(class_labels)
        return self.map(emb)

    def encode(self, x_in: Tensor, emb: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Encoder and middle blocks: ``(bottleneck, skips)``."""
        h = self.stem(x_in)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            skips.append(h)
        for block in self.mid:
            h = block(h, emb)
        return h, skips

    def forward(self, x_in: Tensor, c_noise: Tensor, class_labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        emb = self.embedding(c_noise, class_labels)
        bottleneck, skips = self.encode(x_in, emb)
        h = bottleneck
        for layer in self.up:
            h = layer(torch.cat([h, skips.pop()], dim=1), emb) if isinstance(layer, ResBlock) else layer(h)
        return self.out(F.silu(self.out_norm(h))), bottleneck
