"""One-step distillation of the ring teacher with any loss preset (METHOD.md sections 3-5, 7).

Per step, alternating (SiD's order): the fake score ``D_p`` takes a denoising step on ``sg(x0)``; the ratio
head takes a balanced-BCE step (real: noised exact ring samples, fake: noised generator samples); the
generator takes a step on the preset's loss, with the exact analytic teacher denoiser as ``D_q``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from uni3d.diffusion.edm import heun_sample, lognormal_sigma
from uni3d.io import save_json
from uni3d.losses import (
    Preset,
    RatioEstimate,
    discriminator_loss,
    fake_score_loss,
    generator_loss,
    get_preset,
    ratio_from_logits,
    regression_loss,
)
from uni3d.modules import frozen
from uni3d.toy.baseline import eval_noise
from uni3d.toy.config import ToyConfig
from uni3d.toy.fit import load_or_fit
from uni3d.toy.metrics import SampleMetrics, evaluate, make_reference
from uni3d.toy.nets import EDMDenoiser, OneStepGenerator, RatioHead
from uni3d.toy.plot import scatter_grid_png


@dataclass
class Counters:
    """Repairs and anomalies during training, all reported (nothing is dropped silently)."""

    skipped_generator_steps: int = 0
    """Generator steps whose loss was non-finite: counted and not applied."""
    ratio_clamped: int = 0
    """Per-sample logits outside ``[-ratio_clamp, ratio_clamp]`` (clamped)."""
    ratio_nonfinite: int = 0
    """Per-sample logits that were NaN/inf (set to ``r = 1`` by ``ratio_from_logits``)."""
    ratio_evaluations: int = 0


@dataclass(frozen=True)
class ToyResult:
    """Metrics of the trained generator (EMA weights), wall time, counters; ``samples`` are the eval samples."""

    preset: str
    metrics: SampleMetrics
    train_seconds: float
    train_cpu_seconds: float
    """Process CPU time of training (all threads): with ``train_seconds`` it shows how busy the machine was."""
    fit_seconds: float
    fit_cached: bool
    counters: Counters
    samples: Tensor

    def as_dict(self) -> dict[str, object]:
        return {
            "preset": self.preset,
            **self.metrics.as_dict(),
            "train_seconds": self.train_seconds,
            "train_cpu_seconds": self.train_cpu_seconds,
            "fit_seconds": self.fit_seconds,
            "fit_cached": self.fit_cached,
            **asdict(self.counters),
        }


class Distiller:
    """The networks, optimizers and the three alternating updates of one toy run."""

    def __init__(self, cfg: ToyConfig, base: EDMDenoiser, gen: torch.Generator) -> None:
        self.cfg, self.gen = cfg, gen
        self.preset: Preset = get_preset(cfg.preset)
        self.teacher = cfg.teacher
        sd = self.teacher.sigma_data
        self.generator = OneStepGenerator(base, cfg.sigma_init).requires_grad_(True)
        self.ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.fake = copy.deepcopy(base).requires_grad_(True)
        self.ratio = RatioHead(sd, cfg.ratio_width)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr_generator)
        self.opt_f = torch.optim.Adam(self.fake.parameters(), lr=cfg.lr_fake)
        self.opt_r = torch.optim.Adam(self.ratio.parameters(), lr=cfg.lr_ratio)
        self.counters = Counters()
        self.pairs = self._regression_pairs() if self.preset.regression_weight > 0 else None

    def _randn(self, n: int) -> Tensor:
        return torch.randn(n, 2, generator=self.gen)

    def _regression_pairs(self) -> tuple[Tensor, Tensor]:
        """DMD's fixed ``(z, teacher ODE sample from the same noise)`` pairs, exact-score Heun sampler."""
        z = self._randn(self.cfg.regression_pairs)
        return z, heun_sample(self.teacher.denoiser, z, self.cfg.regression_nfe)

    def fake_step(self, x0: Tensor) -> None:
        """Denoising step of ``D_p`` on ``sg(x0)`` (EDM weighting)."""
        sigma = lognormal_sigma(x0.shape[0], self.cfg.fake_p_mean, self.cfg.fake_p_std, self.gen)
        x_t = x0.detach() + sigma[:, None] * self._randn(x0.shape[0])
        loss = fake_score_loss(self.fake(x_t, sigma), x0, sigma, "edm", self.teacher.sigma_data).mean()
        self.opt_f.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_f.step()

    def _gen_sigma(self, n: int) -> Tensor:
        return lognormal_sigma(n, self.cfg.gen_p_mean, self.cfg.gen_p_std, self.gen, self.cfg.gen_sigma_min)

    def ratio_step(self, x0: Tensor) -> None:
        """Balanced BCE step of the ratio head: real = noised ring samples, fake = noised generator samples."""
        n = x0.shape[0]
        sigma = self._gen_sigma(n)
        real = self.teacher.sample(n, self.gen) + sigma[:, None] * self._randn(n)
        fake = x0.detach() + sigma[:, None] * self._randn(n)
        loss = discriminator_loss(self.ratio(real, sigma), self.ratio(fake, sigma))
        self.opt_r.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_r.step()

    def _log_ratio(self, x_t: Tensor, sigma: Tensor) -> RatioEstimate:
        with torch.no_grad():
            est = ratio_from_logits(self.ratio(x_t, sigma), self.cfg.ratio_clamp)
        est.count_into(self.counters)
        return est

    def _denoisers(self, x_t: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(D_q, D_p)`` at ``x_t``: live input (frozen parameters) for the expanded/SiD forms, else no grad."""
        live = self.preset.needs_input_grad
        with torch.set_grad_enabled(live), frozen(self.fake):
            d_real = self.teacher.denoiser(x_t if live else x_t.detach(), sigma)
            d_fake = None
            if self.preset.fake_score == "learned":
                d_fake = self.fake(x_t if live else x_t.detach(), sigma)
        return d_real, d_fake

    def generator_step(self, x0: Tensor) -> None:
        """One step on the preset's loss (plus DMD's regression); a non-finite loss is counted and skipped."""
        sigma = self._gen_sigma(x0.shape[0])
        x_t = x0 + sigma[:, None] * self._randn(x0.shape[0])
        d_real, d_fake = self._denoisers(x_t, sigma)
        ratio = self._log_ratio(x_t.detach(), sigma) if self.preset.uses_ratio else None
        loss = generator_loss(self.preset, x0=x0, x_t=x_t, sigma=sigma, d_real=d_real, d_fake=d_fake, ratio=ratio)
        loss = loss.mean()
        if self.pairs is not None:
            idx = torch.randint(self.pairs[0].shape[0], (x0.shape[0],), generator=self.gen)
            loss = (
                loss
                + self.preset.regression_weight
                * regression_loss(self.generator(self.pairs[0][idx]), self.pairs[1][idx]).mean()
            )
        if not torch.isfinite(loss):
            self.counters.skipped_generator_steps += 1
            return
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()

    @torch.no_grad()
    def update_ema(self) -> None:
        for p_ema, p in zip(self.ema.parameters(), self.generator.parameters(), strict=True):
            p_ema.lerp_(p, 1 - self.cfg.ema)

    def step(self) -> None:
        """Fake score, ratio head, generator, EMA: one iteration."""
        z = self._randn(self.cfg.batch_size)
        x0 = self.generator(z)
        if self.preset.fake_score == "learned":
            for _ in range(self.cfg.fake_steps):
                self.fake_step(x0)
        if self.preset.uses_ratio:
            self.ratio_step(x0)
        self.generator_step(x0)
        self.update_ema()


def run_toy(cfg: ToyConfig, out: Path | None = None, cache_dir: Path | None = None, progress: bool = True) -> ToyResult:
    """Fit (or load) the teacher network, distill for ``cfg.steps`` steps, evaluate; write files into ``out``."""
    t0 = time.perf_counter()
    base, cached = load_or_fit(cfg.teacher, cfg.fit, cache_dir)
    fit_seconds = time.perf_counter() - t0
    torch.manual_seed(cfg.seed)
    distiller = Distiller(cfg, base, torch.Generator().manual_seed(cfg.seed))
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in tqdm(range(cfg.steps), desc=f"toy {cfg.preset}", disable=not progress, leave=False):
        distiller.step()
    train_seconds, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    reference = make_reference(cfg.teacher, cfg.eval_samples, cfg.eval_seed)
    with torch.no_grad():
        samples = distiller.ema(eval_noise(cfg.eval_samples, cfg.eval_seed))
    metrics = evaluate(samples, reference.samples, reference.floor, cfg.teacher)
    result = ToyResult(cfg.preset, metrics, train_seconds, train_cpu, fit_seconds, cached, distiller.counters, samples)
    if out is not None:
        write_run(out, cfg, result)
    return result


def write_run(out: Path, cfg: ToyConfig, result: ToyResult) -> None:
    """``config.json`` (resolved), ``metrics.json`` and ``samples.png`` in ``out``."""
    save_json(out / "config.json", asdict(cfg))
    save_json(out / "metrics.json", result.as_dict())
    ed = result.metrics.energy_distance
    title = f"{cfg.preset}: ED {ed:.4f}" if ed is not None else f"{cfg.preset}: non-finite"
    scatter_grid_png(out / "samples.png", [(title, result.samples)], cfg.teacher)
