"""Shared fixtures: tiny frozen denoisers with a live input (as the loss module expects), a stand-in for EDM's
``torch_utils.persistence`` (to write EDM-format pickles), and the web app on a free local port."""

from __future__ import annotations

import socket
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

TINY_BENCH: dict[str, object] = {
    "steps": 2,
    "grid_resolution": 16,
    "render_steps": 32,
    "preview_every": 100,
    "export": {
        "iso_level": 5.0,
        "mc_resolution": 32,
        "max_faces": 2000,
        "texture_size": 32,
        "turntable_frames": 2,
        "turntable_size": 16,
    },
}
"""Benchmark runs on the tiny prior: two steps, a coarse grid and a small export (add ``prior``)."""
TINY_GENERATE: dict[str, object] = {
    "recipe": "embedded",  # the tiny folder is a Stable Diffusion layout: keep the small CPU settings
    "steps": 3,
    "grid_resolution": 16,
    "render_steps": 32,
    "bank_size": 2,
    "bank_nfe": 3,
    "preview_every": 2,
    "checkpoint_every": 2,
    "export": {
        "iso_level": 5.0,
        "mc_resolution": 32,
        "max_faces": 2000,
        "texture_size": 64,
        "turntable_frames": 4,
        "turntable_size": 16,
    },
}
"""Text-to-3D settings small enough for a test: 16 px renders of the tiny prior, 3 steps, a fixed iso-level (no
automatic level pass)."""


class TinyDenoiser(nn.Module):
    """A seeded conv denoiser ``D(x; sigma)`` for image-shaped tests (parameters frozen by the caller)."""

    def __init__(self, channels: int, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        with torch.no_grad():
            for p in self.conv.parameters():
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.reshape(-1, 1, 1, 1)
        return x / (1 + s**2) + torch.tanh(self.conv(x)) * s / (1 + s)


@pytest.fixture
def denoisers() -> tuple[TinyDenoiser, TinyDenoiser]:
    """(teacher D_q, fake D_p) with frozen float64 parameters."""
    nets = (TinyDenoiser(3, 0).double(), TinyDenoiser(3, 1).double())
    for net in nets:
        net.requires_grad_(False)
    return nets


@pytest.fixture
def persistence(monkeypatch: pytest.MonkeyPatch) -> types.FunctionType:
    """A stand-in ``torch_utils.persistence`` module, so pickle can name the reconstruct function."""
    package, module = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta: dict[str, object]) -> object:
        raise AssertionError("only used as a name while pickling")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj  # type: ignore[attr-defined]
    package.persistence = module  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch_utils", package)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", module)
    return _reconstruct_persistent_obj


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The app on a free port of 127.0.0.1 with an empty output folder: ``(url, out)``."""
    from uni3d.app.ui import launch

    root = tmp_path_factory.mktemp("app")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        mp.setenv("GRADIO_TEMP_DIR", str(root / "gradio"))
        demo = launch(root / "out", port=_free_port(), block=False)
        try:
            yield demo.local_url, root / "out"
        finally:
            demo.close()


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny networks only
    lose time to thread hand-offs on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory: pytest.TempPathFactory):
    """``(folder, prior)``: a tiny random Stable Diffusion folder built offline (8x8 latents) and its loaded prior."""
    from uni3d.models.stable_diffusion import StableDiffusionPrior
    from uni3d.models.tiny_sd import build_tiny_pipeline

    folder = build_tiny_pipeline(tmp_path_factory.mktemp("prior") / "tiny-sd", seed=0, sample_size=8)
    return folder, StableDiffusionPrior.from_pretrained(folder)
