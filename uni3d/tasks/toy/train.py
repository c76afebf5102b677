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
from uni3d.engine import Counters, Denoised, DistillationLoop, Draw, LoopSettings, Part
from uni3d.io import save_json
from uni3d.losses import Preset, fake_score_loss, get_preset, regression_loss
from uni3d.models.frozen import frozen
from uni3d.tasks.toy.baseline import eval_noise
from uni3d.tasks.toy.config import ToyConfig
from uni3d.tasks.toy.fit import load_or_fit
from uni3d.tasks.toy.metrics import SampleMetrics, evaluate, make_reference
from uni3d.tasks.toy.nets import EDMDenoiser, MlpRatioHead, OneStepGenerator
from uni3d.tasks.toy.plot import scatter_grid_png


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
            **self.counters.report("skip"),
        }


class Distiller:
    """The networks and optimizers of one toy run and what it supplies to the shared :class:`DistillationLoop`."""

    def __init__(self, cfg: ToyConfig, base: EDMDenoiser, gen: torch.Generator) -> None:
        self.cfg, self.gen = cfg, gen
        self.preset: Preset = get_preset(cfg.preset)
        self.teacher = cfg.teacher
        sd = self.teacher.sigma_data
        self.generator = OneStepGenerator(base, cfg.sigma_init).requires_grad_(True)
        self.ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.fake = copy.deepcopy(base).requires_grad_(True)
        self.ratio = MlpRatioHead(sd, cfg.ratio_width)
        learned, ratio = self.preset.fake_score == "learned", self.preset.uses_ratio
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr_generator)
        opt_f = torch.optim.Adam(self.fake.parameters(), lr=cfg.lr_fake)
        opt_r = torch.optim.Adam(self.ratio.parameters(), lr=cfg.lr_ratio)
        self.loop = DistillationLoop(
            self,
            self.preset,
            Part("generator", self.generator, opt_g, optimizer_key="opt_g"),
            fake=Part("fake", self.fake, opt_f, optimizer_key="opt_f") if learned else None,
            ratio=Part("ratio", self.ratio, opt_r, optimizer_key="opt_r") if ratio else None,
            settings=LoopSettings(fake_steps=cfg.fake_steps, ratio_clamp=cfg.ratio_clamp),
            ema=self.ema,
            ema_decay=lambda step: cfg.ema,
        )
        self.pairs = self._regression_pairs() if self.preset.regression_weight > 0 else None

    def _randn(self, n: int) -> Tensor:
        return torch.randn(n, 2, generator=self.gen)

    def _regression_pairs(self) -> tuple[Tensor, Tensor]:
        """DMD's fixed ``(z, teacher ODE sample from the same noise)`` pairs, exact-score Heun sampler."""
        z = self._randn(self.cfg.regression_pairs)
        return z, heun_sample(self.teacher.denoiser, z, self.cfg.regression_nfe)

    def _gen_sigma(self, n: int) -> Tensor:
        return lognormal_sigma(n, self.cfg.gen_p_mean, self.cfg.gen_p_std, self.gen, self.cfg.gen_sigma_min)

    def draw(self, step: int, *, train_generator: bool) -> Draw:
        return Draw(self.generator(self._randn(self.cfg.batch_size)))

    def fake_score_loss(self, draw: Draw) -> Tensor:
        """Denoising loss of ``D_p`` on ``sg(x0)`` (EDM weighting)."""
        x0 = draw.x0
        sigma = lognormal_sigma(x0.shape[0], self.cfg.fake_p_mean, self.cfg.fake_p_std, self.gen)
        x_t = x0.detach() + sigma[:, None] * self._randn(x0.shape[0])
        return fake_score_loss(self.fake(x_t, sigma), x0, sigma, "edm", self.teacher.sigma_data).mean()

    def ratio_logits(self, draw: Draw, denoised: Denoised | None) -> tuple[Tensor, Tensor]:
        """Real = noised ring samples, fake = noised generator samples, at the generator loss's noise levels."""
        n = draw.x0.shape[0]
        sigma = self._gen_sigma(n)
        real = self.teacher.sample(n, self.gen) + sigma[:, None] * self._randn(n)
        fake = draw.x0.detach() + sigma[:, None] * self._randn(n)
        return self.ratio(real, sigma), self.ratio(fake, sigma)

    def denoise(self, draw: Draw) -> Denoised:
        """``(D_q, D_p)`` at ``x_t``: live input (frozen parameters) for the expanded/SiD forms, else no grad."""
        x0 = draw.x0
        sigma = self._gen_sigma(x0.shape[0])
        x_t = x0 + sigma[:, None] * self._randn(x0.shape[0])
        live = self.preset.needs_input_grad
        with torch.set_grad_enabled(live), frozen(self.fake):
            d_real = self.teacher.denoiser(x_t if live else x_t.detach(), sigma)
            d_fake = None
            if self.preset.fake_score == "learned":
                d_fake = self.fake(x_t if live else x_t.detach(), sigma)
        logits = None
        if self.preset.uses_ratio:
            with torch.no_grad():
                logits = self.ratio(x_t.detach(), sigma)
        return Denoised(x_t=x_t, sigma=sigma, d_real=d_real, d_fake=d_fake, ratio_logits=logits)

    def extra_loss(self, draw: Draw) -> Tensor | None:
        """DMD's regression on fixed teacher pairs (weighted), for presets with a regression weight."""
        if self.pairs is None:
            return None
        idx = torch.randint(self.pairs[0].shape[0], (draw.x0.shape[0],), generator=self.gen)
        return (
            self.preset.regression_weight
            * regression_loss(self.generator(self.pairs[0][idx]), self.pairs[1][idx]).mean()
        )


def run_toy(cfg: ToyConfig, out: Path | None = None, cache_dir: Path | None = None, progress: bool = True) -> ToyResult:
    """Fit (or load) the teacher network, distill for ``cfg.steps`` steps, evaluate; write files into ``out``."""
    t0 = time.perf_counter()
    base, cached = load_or_fit(cfg.teacher, cfg.fit, cache_dir)
    fit_seconds = time.perf_counter() - t0
    torch.manual_seed(cfg.seed)
    distiller = Distiller(cfg, base, torch.Generator().manual_seed(cfg.seed))
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in tqdm(range(cfg.steps), desc=f"toy {cfg.preset}", disable=not progress, leave=False):
        distiller.loop.step()
    train_seconds, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    reference = make_reference(cfg.teacher, cfg.eval_samples, cfg.eval_seed)
    with torch.no_grad():
        samples = distiller.ema(eval_noise(cfg.eval_samples, cfg.eval_seed))
    metrics = evaluate(samples, reference.samples, reference.floor, cfg.teacher)
    result = ToyResult(
        cfg.preset, metrics, train_seconds, train_cpu, fit_seconds, cached, distiller.loop.counters, samples
    )
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
