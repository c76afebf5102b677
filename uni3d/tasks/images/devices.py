"""``--device`` of the image commands: ``cpu`` (default) or ``cuda`` / ``cuda:N`` when CUDA is available."""

from __future__ import annotations

import torch

from uni3d.errors import UsageError


def resolve_device(name: str) -> torch.device:
    """The device called ``name``; a one-line error for another kind, or for CUDA on a machine without it."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use cpu or cuda") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"unsupported device {name!r}; use cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__}); use cpu")
    return device
