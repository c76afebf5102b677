"""Shape and precision helpers shared by the loss functions (batch-first tensors of any shape)."""

from __future__ import annotations

import torch
from torch import Tensor


def compute_dtype(x: Tensor) -> torch.dtype:
    """float64 stays float64; half precisions (bf16/fp16) are computed in float32."""
    return torch.promote_types(x.dtype, torch.float32)


def per_sample(v: Tensor | float, like: Tensor) -> Tensor:
    """Reshape a scalar or ``[B]`` tensor to ``[B, 1, ..., 1]`` so it broadcasts against ``like``."""
    v = torch.as_tensor(v, dtype=compute_dtype(like), device=like.device)
    if v.ndim == 0:
        v = v.expand(like.shape[0])
    if v.shape[0] != like.shape[0]:
        raise ValueError(f"per-sample tensor has {v.shape[0]} entries for a batch of {like.shape[0]}")
    return v.reshape(like.shape[0], *([1] * (like.ndim - 1)))


def batch_dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample inner product ``sum over non-batch dims of a * b`` -> ``[B]``."""
    return (a * b).flatten(1).sum(1)


def sample_weight(weight: Tensor | float, like: Tensor) -> Tensor:
    """A scalar or ``[B]`` weight as a detached ``[B]`` tensor in the compute dtype of ``like``."""
    return per_sample(torch.as_tensor(weight).detach(), like).flatten()
