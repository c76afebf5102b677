"""Fresh (camera, ``t``, noise) draws on a text-to-3D run's current state, and a run measured every N steps.

The diagnostic benchmarks (``uni3d bench fake-bias``, ``uni3d bench teacher-jacobian``) look at the generator
loss on draws of their own: a separate seed inside :func:`torch.random.fork_rng`, so the run's random stream and
its result are the same as without the measurements.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from uni3d.tasks.text_to_3d.config import GenerateConfig

if TYPE_CHECKING:  # the trainer imports diffusers and peft: only when a benchmark runs
    from uni3d.tasks.text_to_3d.trainer import TextTo3D


@dataclass(frozen=True)
class Draw:
    """One draw: the render's latent ``x0`` (detached), ``sigma`` ``[1]``, the noise, text conditions, camera."""

    x0: Tensor
    sigma: Tensor
    noise: Tensor
    cond: Tensor
    uncond: Tensor
    c2w: Tensor

    def noised(self, x0: Tensor | None = None) -> Tensor:
        """``x_t = x0 + sigma n`` (VE units) of the draw's latent, or of ``x0`` (e.g. a live copy of it)."""
        return (self.x0 if x0 is None else x0) + self.sigma.view(-1, 1, 1, 1) * self.noise


def fresh_draws(trainer: TextTo3D, draws: int, seed: int = 1000) -> Iterator[Draw]:
    """``draws`` draws of one view each at the run's current progress, from their own ``seed``; draw ``i`` renders
    particle ``i mod K`` with that particle's noise (fresh, or its seeded noise)."""
    progress = trainer.step / trainer.cfg.steps
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(draws):
            particle = i % len(trainer.renderers)
            cams = trainer.sampler.sample(1, trainer.size)
            cond, uncond = trainer.conditions(cams)
            with torch.no_grad():
                rgb, *_ = trainer.render(cams, particle)
                x0 = trainer.to_latents(rgb)
            sigma = trainer.noise_level(1, progress)
            yield Draw(x0, sigma, trainer.noise(x0, [particle]), cond, uncond, cams.c2w.to(x0.device))


def measure_run(
    cfg: GenerateConfig, every: int, measure: Callable[[TextTo3D], dict[str, Any]], prior: Any = None
) -> list[dict[str, Any]]:
    """Train ``cfg`` for ``cfg.steps`` steps; ``{"step": k, **measure(trainer)}`` at step 0, every ``every``, the end."""
    from uni3d.tasks.text_to_3d.run import load_prior  # diffusers: imported only when a benchmark runs
    from uni3d.tasks.text_to_3d.trainer import TextTo3D, prior_image_size

    prior = prior if prior is not None else load_prior(cfg)
    cfg = cfg.resolved(prior_image_size(prior))
    torch.manual_seed(cfg.seed)
    trainer = TextTo3D(cfg, prior)
    rows = []
    while True:
        if trainer.step % every == 0 or trainer.step == cfg.steps:
            rows.append({"step": trainer.step, **measure(trainer)})
        if trainer.step == cfg.steps:
            return rows
        trainer.train_step()
