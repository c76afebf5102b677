"""Layers of NVlabs EDM's networks (Karras et al. 2022, ``training/networks.py``), written for uni3d.

Parameter and buffer names match EDM's, so an EDM ``state_dict`` loads into these modules with
``strict=True``: ``Linear`` / ``Conv2d`` hold ``weight`` ``[out, in(, k, k)]`` and ``bias``; a resampling
``Conv2d`` holds the 2-D ``resample_filter`` buffer ``f f^T / (sum f)^2`` (``[1, 1, n, n]``; a kernel-0 conv
is a pure resampler without weights); ``GroupNorm`` uses ``min(32, C // 4)`` groups; ``FourierEmbedding``
holds its random ``freqs`` buffer. Fresh weights are Xavier-uniform times ``init_scale`` (EDM's exact
initialisation schemes are not reproduced: these layers exist to run trained weights).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _xavier(shape: Sequence[int], fan_in: int, fan_out: int, scale: float) -> Tensor:
    bound = math.sqrt(6 / (fan_in + fan_out))
    return (torch.rand(*shape) * 2 - 1) * bound * scale


class Linear(nn.Module):
    """``y = x W^T + b`` with EDM's parameter names."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init_scale: float = 1.0) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(_xavier((out_features, in_features), in_features, out_features, init_scale))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


class Conv2d(nn.Module):
    """Same-padded ``kernel x kernel`` convolution with optional 2x up/downsampling by a separable FIR filter.

    Unfused: resample first (transposed depthwise conv with ``4 f`` for up, strided depthwise conv with ``f``
    for down), then convolve. ``fused_resample`` with ``down`` convolves first (padding ``w_pad + f_pad``), then
    filters with stride 2 (EDM's NCSN++ residual encoder). ``kernel = 0``: resampling only.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        bias: bool = True,
        up: bool = False,
        down: bool = False,
        resample_filter: Sequence[int] = (1, 1),
        fused_resample: bool = False,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if up and down:
            raise ValueError("a Conv2d resamples up or down, not both")
        if fused_resample and up and kernel:
            raise ValueError("fused upsampling is not used by EDM's networks and not implemented")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.up, self.down, self.fused_resample = up, down, fused_resample
        fan_in, fan_out = in_channels * kernel * kernel, out_channels * kernel * kernel
        shape = (out_channels, in_channels, kernel, kernel)
        self.weight = nn.Parameter(_xavier(shape, fan_in, fan_out, init_scale)) if kernel else None
        self.bias = nn.Parameter(torch.zeros(out_channels)) if kernel and bias else None
        f = torch.as_tensor(list(resample_filter), dtype=torch.float32)
        self.register_buffer("resample_filter", (torch.outer(f, f) / f.sum() ** 2)[None, None] if up or down else None)

    def _filter(self, channels: int, dtype: torch.dtype) -> Tensor:
        """The resampling filter as depthwise weights ``[channels, 1, n, n]``."""
        return self.resample_filter.to(dtype).tile(channels, 1, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        w_pad = w.shape[-1] // 2 if w is not None else 0
        f_pad = (self.resample_filter.shape[-1] - 1) // 2 if self.resample_filter is not None else 0
        if self.fused_resample and self.down and w is not None:
            x = F.conv2d(x, w, padding=w_pad + f_pad)
            x = F.conv2d(x, self._filter(self.out_channels, x.dtype), groups=self.out_channels, stride=2)
        else:
            if self.up:
                f = self._filter(self.in_channels, x.dtype) * 4
                x = F.conv_transpose2d(x, f, groups=self.in_channels, stride=2, padding=f_pad)
            if self.down:
                f = self._filter(self.in_channels, x.dtype)
                x = F.conv2d(x, f, groups=self.in_channels, stride=2, padding=f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=w_pad)
        if self.bias is not None:
            x = x + self.bias.reshape(1, -1, 1, 1)
        return x


class GroupNorm(nn.Module):
    """Group normalisation with ``min(num_groups, C // min_channels_per_group)`` groups."""

    def __init__(
        self, num_channels: int, num_groups: int = 32, min_channels_per_group: int = 4, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.num_groups = max(1, min(num_groups, num_channels // min_channels_per_group))
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


class PositionalEmbedding(nn.Module):
    """Transformer-style noise features ``[cos(c f_i), sin(c f_i)]``, ``f_i = (1 / max_positions)^(i / d)``,
    ``d = C/2 - 1`` with ``endpoint`` (DDPM++), ``C/2`` without (ADM); no parameters."""

    def __init__(self, num_channels: int, max_positions: int = 10000, endpoint: bool = False) -> None:
        super().__init__()
        self.num_channels, self.max_positions, self.endpoint = num_channels, max_positions, endpoint

    def forward(self, c_noise: Tensor) -> Tensor:
        half = self.num_channels // 2
        i = torch.arange(half, dtype=torch.float32, device=c_noise.device)
        freqs = (1 / self.max_positions) ** (i / (half - (1 if self.endpoint else 0)))
        angles = torch.outer(c_noise, freqs.to(c_noise.dtype))
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier noise features ``[cos(2 pi c f_i), sin(2 pi c f_i)]``, ``f ~ N(0, scale^2)`` (NCSN++)."""

    def __init__(self, num_channels: int, scale: float = 16.0) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.randn(num_channels // 2) * scale)

    def forward(self, c_noise: Tensor) -> Tensor:
        angles = torch.outer(c_noise, (2 * math.pi * self.freqs).to(c_noise.dtype))
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class UNetBlock(nn.Module):
    """EDM's unified residual block (DDPM++, NCSN++ and ADM) with optional resampling and self-attention.

    ``h = conv0(silu(norm0(x)))`` (resampling inside ``conv0``); the embedding adds a per-channel shift
    (``silu(norm1(h + a))``) or, with ``adaptive_scale``, a scale and shift (``silu(norm1(h) (1 + s) + b)``);
    then dropout, ``conv1``, the (projected/resampled) skip and a ``skip_scale`` factor. With attention
    (``num_heads > 0``), single-scale dot-product self-attention over pixels follows, again residual and
    scaled; ``qkv`` splits its ``3C`` channels as ``[heads, C / heads, 3]`` (EDM's layout).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        up: bool = False,
        down: bool = False,
        num_heads: int = 0,
        dropout: float = 0.0,
        skip_scale: float = 1.0,
        eps: float = 1e-5,
        resample_filter: Sequence[int] = (1, 1),
        resample_proj: bool = False,
        adaptive_scale: bool = True,
        zero_scale: float = 1e-5,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_heads, self.dropout = num_heads, dropout
        self.skip_scale, self.adaptive_scale = skip_scale, adaptive_scale
        self.norm0 = GroupNorm(in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels, out_channels, 3, up=up, down=down, resample_filter=resample_filter)
        self.affine = Linear(emb_channels, out_channels * (2 if adaptive_scale else 1))
        self.norm1 = GroupNorm(out_channels, eps=eps)
        self.conv1 = Conv2d(out_channels, out_channels, 3, init_scale=zero_scale)
        self.skip = None
        if out_channels != in_channels or up or down:
            kernel = 1 if resample_proj or out_channels != in_channels else 0
            self.skip = Conv2d(in_channels, out_channels, kernel, up=up, down=down, resample_filter=resample_filter)
        if num_heads:
            self.norm2 = GroupNorm(out_channels, eps=eps)
            self.qkv = Conv2d(out_channels, out_channels * 3, 1, init_scale=math.sqrt(0.2))
            self.proj = Conv2d(out_channels, out_channels, 1, init_scale=zero_scale)

    def attention(self, x: Tensor) -> Tensor:
        """``softmax(q^T k / sqrt(d)) v`` over the ``H W`` pixels, per head (``d = C / heads``)."""
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm2(x)).reshape(b * self.num_heads, c // self.num_heads, 3, h * w).unbind(2)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return a.transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        params = self.affine(emb)[:, :, None, None].to(h.dtype)
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            h = F.silu(shift + self.norm1(h) * (scale + 1))
        else:
            h = F.silu(self.norm1(h + params))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        x = (h + (self.skip(x) if self.skip is not None else x)) * self.skip_scale
        if self.num_heads:
            x = (self.proj(self.attention(x)) + x) * self.skip_scale
        return x
