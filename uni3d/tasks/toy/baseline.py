"""The baseline the students must beat: the teacher's own EDM Heun sampler with the exact score."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from uni3d.diffusion.edm import heun_sample
from uni3d.tasks.toy.metrics import Reference, SampleMetrics, evaluate
from uni3d.tasks.toy.teacher import RingTeacher

TEACHER_NFES: tuple[int, ...] = (1, 3, 5, 11, 35)


@dataclass(frozen=True)
class BaselineResult:
    """Metrics of ``n`` teacher samples at ``nfe`` denoiser calls, and the seconds the sampling took."""

    nfe: int
    metrics: SampleMetrics
    seconds: float
    samples: Tensor

    def as_dict(self) -> dict[str, object]:
        return {"nfe": self.nfe, **self.metrics.as_dict(), "seconds": self.seconds}


def teacher_baseline(teacher: RingTeacher, nfe: int, noise: Tensor, reference: Reference) -> BaselineResult:
    """Sample with :func:`~uni3d.diffusion.edm.heun_sample` from ``sigma_max * noise`` and evaluate."""
    t0 = time.perf_counter()
    samples = heun_sample(teacher.denoiser, noise.double(), nfe).float()
    seconds = time.perf_counter() - t0
    metrics = evaluate(samples, reference.samples, reference.floor, teacher)
    return BaselineResult(nfe, metrics, seconds, samples)


def eval_noise(n: int, eval_seed: int) -> Tensor:
    """The standard-normal latents every sampler (student or teacher) is evaluated on."""
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(eval_seed + 1))
