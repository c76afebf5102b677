"""``--device`` of every command: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

import re

import torch

from uni3d.errors import UsageError

_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_name(name: str) -> None:
    """One-line error unless ``name`` is a device name uni3d runs on (whether it is present is :func:`resolve_device`'s
    question: a saved setting may name CUDA and be resumed elsewhere with ``--device cpu``)."""
    if _NAME.fullmatch(name) is None:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")


def resolve_device(name: str) -> torch.device:
    """The device called ``name`` (``auto``: ``cuda`` when available, else ``cpu``); one-line errors for another
    kind, or for CUDA on a machine without it."""
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__}); use cpu")
    return torch.device(name)
