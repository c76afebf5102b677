"""Small helpers on ``torch.nn`` modules shared by the distillers (toy, images, text-to-3D)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn


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


@contextmanager
def mid_block_outputs(unet: nn.Module) -> Iterator[list[Tensor]]:
    """The outputs of ``unet.mid_block`` of every forward pass inside the block, detached, in call order.

    The ratio head reads a UNet's mid-block features (METHOD.md section 5); this takes them from a network that
    keeps no hook of its own (the teacher), and removes the hook afterwards, also on error.
    """
    seen: list[Tensor] = []

    def keep(module: nn.Module, inputs: object, output: Tensor) -> None:
        seen.append(output.detach().float())

    handle = unet.mid_block.register_forward_hook(keep)
    try:
        yield seen
    finally:
        handle.remove()
