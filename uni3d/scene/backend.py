"""Which implementation runs the scene: pure PyTorch everywhere, tinycudann + nerfacc where CUDA is present.

The compiled libraries are imported only after ``torch.cuda.is_available()`` says yes: with CPU torch and
``nvcc`` on PATH, nerfacc's first-use JIT build fails and leaves a broken cache (DESIGN.md, "Facts measured").
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

import torch

from uni3d.errors import UsageError

BACKENDS = ("auto", "torch", "cuda")
log = logging.getLogger(__name__)


def _import_if_cuda(name: str) -> ModuleType | None:
    """Import ``name`` only when CUDA is usable; ``None`` when CUDA is absent or the import fails."""
    if not torch.cuda.is_available():
        return None
    try:
        return importlib.import_module(name)
    except Exception:  # a broken CUDA extension raises OSError/RuntimeError, not only ImportError
        return None


def tinycudann_module() -> ModuleType | None:
    """The ``tinycudann`` module when it imports and CUDA is present, else ``None``."""
    return _import_if_cuda("tinycudann")


def nerfacc_module() -> ModuleType | None:
    """The ``nerfacc`` module when it imports and CUDA is present, else ``None``."""
    return _import_if_cuda("nerfacc")


def resolve_backend(name: str = "auto") -> str:
    """Map ``auto`` / ``torch`` / ``cuda`` to the backend that will run, ``"torch"`` or ``"cuda"``, and log it.

    ``auto`` picks ``cuda`` (tinycudann encoding + nerfacc sampling and compositing) when both libraries
    import and CUDA is present, else ``torch``. Asking for ``cuda`` where it cannot run is a usage error.
    """
    if name not in BACKENDS:
        raise UsageError(f"unknown scene backend {name!r}; choose one of {', '.join(BACKENDS)}")
    cuda_ok = tinycudann_module() is not None and nerfacc_module() is not None
    if name == "cuda" and not cuda_ok:
        raise UsageError("scene backend 'cuda' needs CUDA with tinycudann and nerfacc importable; use 'torch'")
    picked = "cuda" if name == "cuda" or (name == "auto" and cuda_ok) else "torch"
    log.info("scene backend: %s (asked for %s)", picked, name)
    return picked
