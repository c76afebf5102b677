"""Small helpers on ``torch.nn`` modules shared by the distillers (toy, images, text-to-3D)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Parameters detached for the block, so gradient flows through ``module`` into its input only.

    This is how the expanded and SiD forms evaluate ``D_q`` and ``D_p`` (METHOD.md section 4: the score
    networks are frozen functions whose inputs carry gradient). The previous ``requires_grad`` flags are
    restored afterwards, also on error.
    """
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)
