"""``uni3d.models.frozen.frozen``: gradient reaches the input, not the parameters; flags come back, also on error."""

from __future__ import annotations

import pytest
import torch

from uni3d.models.frozen import frozen


def test_frozen_passes_gradient_to_the_input_only_and_restores_flags() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    net[1].weight.requires_grad_(False)  # a flag that must survive as it was
    x = torch.randn(5, 3, requires_grad=True)
    with frozen(net):
        net(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())
    assert [p.requires_grad for p in net.parameters()] == [True, True, False, True]
    with pytest.raises(RuntimeError), frozen(net):
        raise RuntimeError("boom")
    assert [p.requires_grad for p in net.parameters()] == [True, True, False, True]
