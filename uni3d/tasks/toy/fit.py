"""The teacher as a network: an MLP denoiser regressed onto the analytic one, cached by its settings.

The student starts from copies of this network (generator and fake score), as SiD and Uni-Instruct
start from the pretrained teacher. Training regresses directly onto the exact ``D(x_t; sigma)``
(no noisy targets), with EDM's loss weight ``lambda(sigma)`` and ``sigma`` log-uniform over the whole
sampling range, so it converges in seconds.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from uni3d.diffusion.edm import SIGMA_MAX, SIGMA_MIN, loss_weight
from uni3d.io import atomic_write
from uni3d.tasks.toy.nets import EDMDenoiser
from uni3d.tasks.toy.teacher import RingTeacher


@dataclass(frozen=True)
class FitConfig:
    """Settings of the teacher-network fit; they (with the teacher's) key the cache."""

    width: int = 128
    depth: int = 4
    steps: int = 4000
    batch_size: int = 1024
    lr: float = 2e-3
    seed: int = 0


def default_cache_dir() -> Path:
    """``$UNI3D_CACHE_DIR``, else ``~/.cache/uni3d``."""
    return Path(os.environ.get("UNI3D_CACHE_DIR") or Path.home() / ".cache" / "uni3d")


def cache_path(teacher: RingTeacher, fit: FitConfig, cache_dir: Path) -> Path:
    """``<cache_dir>/toy/denoiser-<hash of the settings>.pt``."""
    key = json.dumps({"teacher": asdict(teacher), "fit": asdict(fit), "torch": torch.__version__}, sort_keys=True)
    return cache_dir / "toy" / f"denoiser-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def _log_uniform_sigma(n: int, generator: torch.Generator) -> torch.Tensor:
    lo, hi = math.log(SIGMA_MIN), math.log(SIGMA_MAX)
    return (lo + (hi - lo) * torch.rand(n, generator=generator)).exp()


def fit_denoiser(teacher: RingTeacher, fit: FitConfig) -> EDMDenoiser:
    """Regress an :class:`EDMDenoiser` onto ``teacher.denoiser`` (deterministic for a given ``fit.seed``)."""
    gen = torch.Generator().manual_seed(fit.seed)
    torch.manual_seed(fit.seed)
    net = EDMDenoiser(teacher.sigma_data, fit.width, fit.depth)
    opt = torch.optim.Adam(net.parameters(), lr=fit.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(fit.steps, 1))
    for _ in range(fit.steps):
        sigma = _log_uniform_sigma(fit.batch_size, gen)
        x_t = teacher.sample(fit.batch_size, gen) + sigma[:, None] * torch.randn(fit.batch_size, 2, generator=gen)
        target = teacher.denoiser(x_t, sigma)
        loss = (loss_weight(sigma, teacher.sigma_data) * (net(x_t, sigma) - target).pow(2).sum(1)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.requires_grad_(False).eval()


def load_or_fit(teacher: RingTeacher, fit: FitConfig, cache_dir: Path | None = None) -> tuple[EDMDenoiser, bool]:
    """The fitted teacher network from the cache, or fitted now and cached; returns ``(net, was_cached)``."""
    path = cache_path(teacher, fit, cache_dir or default_cache_dir())
    net = EDMDenoiser(teacher.sigma_data, fit.width, fit.depth)
    if path.exists():
        net.load_state_dict(torch.load(path, weights_only=True))
        return net.requires_grad_(False).eval(), True
    net = fit_denoiser(teacher, fit)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    atomic_write(path, buf.getvalue())
    return net, False
