"""One-step image distillation with any loss preset (METHOD.md sections 3-5, 7; SiD's alternating order).

Per step, on one batch ``x0 = G(z)``: the fake score ``D_p`` takes a denoising step on ``sg(x0)``; the ratio
head (on ``D_p``'s bottleneck) takes a balanced-BCE step, real = noised training digits, fake = noised
``sg(x0)``; the generator takes a step on the preset's loss with the teacher ``D_q`` and ``D_p`` evaluated
with frozen parameters on a live ``x_t`` when ``preset.needs_input_grad``; then the generator's EMA (decay
``min(ema, (n + 1) / (n + 10))`` after ``n`` steps, so short runs are not dominated by the start).
Non-finite losses are counted (and their update skipped), never dropped silently.

Scale-out: with ``world.size > 1`` (``torchrun``) the generator, fake score and ratio head are wrapped in
``DistributedDataParallel``. Every rank draws the random numbers of the whole global batch from the same
seeded generator and keeps its own slice, and every loss is a batch mean, so DDP's gradient average equals
the 1-process gradient of the same global batch (up to float rounding of the all-reduce).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from uni3d.diffusion.edm import heun_sample, lognormal_sigma
from uni3d.errors import UsageError
from uni3d.images.data import ImageSet
from uni3d.images.denoiser import EDMDenoiser, OneStepGenerator, RatioHead
from uni3d.images.distill_config import DistillConfig
from uni3d.images.teacher import ema_update
from uni3d.losses import (
    RatioEstimate,
    discriminator_loss,
    fake_score_loss,
    generator_loss,
    get_preset,
    ratio_from_logits,
    regression_loss,
)
from uni3d.modules import frozen


@dataclass(frozen=True)
class World:
    """This process's rank and the number of processes (``1``: no ``torch.distributed``)."""

    rank: int = 0
    size: int = 1


@dataclass
class Counters:
    """Skipped updates and ratio repairs (of rank 0's share of the batch), in ``metrics.csv`` and the summary."""

    skipped_generator_steps: int = 0
    skipped_fake_steps: int = 0
    skipped_ratio_steps: int = 0
    ratio_clamped: int = 0
    ratio_nonfinite: int = 0
    ratio_evaluations: int = 0


class ImageDistiller:
    """Networks, optimizers, random state and the three alternating updates of one run (or one rank of it)."""

    def __init__(self, cfg: DistillConfig, teacher: EDMDenoiser, data: ImageSet, world: World = World()) -> None:
        if cfg.batch_size % world.size:
            raise UsageError(f"batch size {cfg.batch_size} must be a multiple of the {world.size} processes")
        self.cfg, self.data, self.world = cfg, data, world
        self.device = torch.device(cfg.device)
        if self.device.type != "cpu" and world.size > 1:
            raise UsageError(f"--device {cfg.device} with several processes is not supported; use cpu under torchrun")
        self.preset = get_preset(cfg.preset)
        self.teacher = teacher.requires_grad_(False).eval().to(self.device)
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.generator = OneStepGenerator(teacher, cfg.sigma_init).requires_grad_(True)
        self.ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.fake = copy.deepcopy(teacher).requires_grad_(True)
        self.ratio = RatioHead(teacher.net.cfg.channels[-1], cfg.ratio_width).to(self.device)
        self._generator_call = self._wrap(self.generator)
        self._fake_call = self._wrap(self.fake)
        self._ratio_call = self._wrap(self.ratio)
        betas = (cfg.adam_beta1, 0.999)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr_generator, betas=betas)
        self.opt_f = torch.optim.Adam(self.fake.parameters(), lr=cfg.lr_fake, betas=betas)
        self.opt_r = torch.optim.Adam(self.ratio.parameters(), lr=cfg.lr_ratio, betas=betas)
        self.counters = Counters()
        self.step_count = 0
        self.last: dict[str, float] = {}
        self.pairs = self._regression_pairs() if self.preset.regression_weight > 0 else None

    def _wrap(self, module: nn.Module) -> nn.Module:
        return DistributedDataParallel(module) if self.world.size > 1 else module

    @property
    def num_classes(self) -> int:
        return self.teacher.num_classes

    def _share(self, t: Tensor) -> Tensor:
        """This rank's slice of a global-batch tensor."""
        n = t.shape[0] // self.world.size
        return t[self.world.rank * n : (self.world.rank + 1) * n]

    def _randn(self, shape: tuple[int, ...]) -> Tensor:
        """Normal noise of the global batch ``shape`` (same stream on every rank), this rank's slice.

        Every random number is drawn on the CPU from ``self.gen`` and then moved to ``self.device``.
        """
        return self._share(torch.randn(shape, generator=self.gen).to(self.device))

    def _image_noise(self) -> Tensor:
        return self._randn((self.cfg.batch_size, *self.data.images.shape[1:]))

    def _labels(self) -> Tensor | None:
        if not self.num_classes:
            return None
        return self._share(torch.randint(self.num_classes, (self.cfg.batch_size,), generator=self.gen).to(self.device))

    def _indices(self, n: int) -> Tensor:
        return self._share(torch.randint(n, (self.cfg.batch_size,), generator=self.gen))

    def _sigma(self, p_mean: float, p_std: float, sigma_min: float = 0.0) -> Tensor:
        return self._share(lognormal_sigma(self.cfg.batch_size, p_mean, p_std, self.gen, sigma_min).to(self.device))

    def _regression_pairs(self) -> tuple[Tensor, Tensor | None, Tensor]:
        """DMD's fixed ``(z, labels, teacher Heun sample from the same noise)`` pairs (the same on every rank)."""
        z = torch.randn((self.cfg.regression_pairs, *self.data.images.shape[1:]), generator=self.gen)
        labels = None
        if self.num_classes:
            labels = torch.randint(self.num_classes, (z.shape[0],), generator=self.gen).to(self.device)
        z = z.to(self.device)
        return z, labels, heun_sample(lambda x, s: self.teacher(x, s, labels), z, self.cfg.regression_nfe)

    def _global_mean(self, value: Tensor) -> float:
        """Mean of a per-rank scalar over the ranks (a non-finite value on any rank makes it non-finite)."""
        value = value.detach().float().clone()
        if self.world.size > 1:
            dist.all_reduce(value)
            value /= self.world.size
        return float(value)

    def _apply(self, loss: Tensor, opt: torch.optim.Optimizer, counter: str, name: str) -> bool:
        """Backward; ``True`` (step the optimizer) unless the loss is non-finite on some rank.

        The backward runs even then, so every rank's DDP reducer completes its iteration; the gradients
        are discarded and the skip is counted in ``counter``.
        """
        value = self._global_mean(loss)
        self.last[name] = value
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if math.isfinite(value):
            return True
        opt.zero_grad(set_to_none=True)
        setattr(self.counters, counter, getattr(self.counters, counter) + 1)
        return False

    def fake_step(self, x0: Tensor, labels: Tensor | None) -> None:
        """Denoising step of ``D_p`` on ``sg(x0)`` (EDM weighting, :func:`uni3d.losses.fake_score_loss`)."""
        sigma = self._sigma(self.cfg.fake_p_mean, self.cfg.fake_p_std)
        x_t = x0.detach() + sigma[:, None, None, None] * self._image_noise()
        d_pred = self._fake_call(x_t, sigma, labels)
        loss = fake_score_loss(d_pred, x0, sigma, "edm", self.fake.sigma_data).mean()
        if self._apply(loss, self.opt_f, "skipped_fake_steps", "loss_fake"):
            self.opt_f.step()

    def _gen_sigma(self) -> Tensor:
        """Noise levels of the generator loss and the ratio head: log-normal truncated at ``gen_sigma_min``."""
        return self._sigma(self.cfg.gen_p_mean, self.cfg.gen_p_std, self.cfg.gen_sigma_min)

    def ratio_step(self, x0: Tensor, labels: Tensor | None) -> None:
        """Balanced BCE of the ratio head (METHOD.md section 5): real = noised data, fake = noised ``sg(x0)``."""
        n = x0.shape[0]
        sigma = self._gen_sigma()
        idx = self._indices(len(self.data))
        real = self.data.images[idx].to(self.device) + sigma[:, None, None, None] * self._image_noise()
        fake = x0.detach() + sigma[:, None, None, None] * self._image_noise()
        both_labels = None if labels is None else torch.cat([self.data.labels[idx].to(self.device), labels])
        with torch.no_grad():
            features = self.fake.bottleneck(torch.cat([real, fake]), sigma.repeat(2), both_labels)
        logits = self._ratio_call(features)
        loss = discriminator_loss(logits[:n], logits[n:])
        if self._apply(loss, self.opt_r, "skipped_ratio_steps", "loss_ratio"):
            self.opt_r.step()

    def _log_ratio(self, features: Tensor) -> RatioEstimate:
        with torch.no_grad():
            est = ratio_from_logits(self.ratio(features.detach()), self.cfg.ratio_clamp)
        est.count_into(self.counters)
        return est if self.cfg.ratio_motion else est.held_constant()

    def loss_inputs(self, x0: Tensor, labels: Tensor | None) -> dict[str, Any]:
        """The keyword arguments of :func:`~uni3d.losses.generator_loss` for the live generator output ``x0``:
        noise levels, ``x_t``, the teacher's and the fake score's denoisers (frozen parameters, live input when
        the preset needs it) and the ratio estimate."""
        sigma = self._gen_sigma()
        x_t = x0 + sigma[:, None, None, None] * self._image_noise()
        live = self.preset.needs_input_grad
        x_in = x_t if live else x_t.detach()
        d_fake, ratio = None, None
        with torch.set_grad_enabled(live), frozen(self.fake):
            d_real = self.teacher(x_in, sigma, labels)
            if self.preset.fake_score == "learned":
                d_fake, features = self.fake.with_features(x_in, sigma, labels)
                ratio = self._log_ratio(features) if self.preset.uses_ratio else None
        return {"x0": x0, "x_t": x_t, "sigma": sigma, "d_real": d_real, "d_fake": d_fake, "ratio": ratio}

    def generator_step(self, x0: Tensor, labels: Tensor | None, regression: tuple[Tensor, Tensor] | None) -> None:
        """One step on the preset's loss (plus DMD's regression ``(prediction, target)``).

        One ``D_p`` pass gives ``d_fake`` and the features of ``log r``.
        """
        loss = generator_loss(self.preset, **self.loss_inputs(x0, labels)).mean()
        if regression is not None:
            loss = loss + self.preset.regression_weight * regression_loss(*regression).mean()
        if self._apply(loss, self.opt_g, "skipped_generator_steps", "loss_generator"):
            norm = torch.nn.utils.clip_grad_norm_(self.generator.parameters(), self.cfg.grad_clip)
            self.last["grad_norm"] = float(norm)
            self.opt_g.step()

    def warmup_step(self) -> None:
        """Fake score and ratio head only, on a batch of the (fixed) generator: they start close to their optima
        for the generator's initial distribution before the generator loss reads them."""
        z, labels = self._image_noise(), self._labels()
        with torch.no_grad():
            x0 = self.generator(z, labels)
        if self.preset.fake_score == "learned":
            self.fake_step(x0, labels)
        if self.preset.uses_ratio:
            self.ratio_step(x0, labels)
        self.step_count += 1

    def step(self) -> None:
        """Fake score, ratio head, generator, EMA: one iteration (one generator forward, DMD's pairs included);
        a :meth:`warmup_step` during the first ``warmup_steps``."""
        if self.step_count < self.cfg.warmup_steps:
            self.warmup_step()
            return
        z, labels = self._image_noise(), self._labels()
        regression_target = None
        if self.pairs is not None:
            pair_z, pair_labels, target = self.pairs
            idx = self._indices(pair_z.shape[0])
            z = torch.cat([z, pair_z[idx]])
            labels = None if labels is None else torch.cat([labels, pair_labels[idx]])
            regression_target = target[idx]
        out = self._generator_call(z, labels)
        n = out.shape[0] if regression_target is None else out.shape[0] // 2
        x0, labels = out[:n], None if labels is None else labels[:n]
        if self.preset.fake_score == "learned":
            self.fake_step(x0, labels)
        if self.preset.uses_ratio:
            self.ratio_step(x0, labels)
        regression = None if regression_target is None else (out[n:], regression_target)
        self.generator_step(x0, labels, regression)
        ema_update(self.ema, self.generator, min(self.cfg.ema, (self.step_count + 1) / (self.step_count + 10)))
        self.step_count += 1

    def state(self) -> dict[str, Any]:
        """Everything needed to continue bit-for-bit (the teacher is re-read from its file)."""
        return {
            "step": self.step_count,
            "generator": self.generator.state_dict(),
            "ema": self.ema.state_dict(),
            "fake": self.fake.state_dict(),
            "ratio": self.ratio.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_f": self.opt_f.state_dict(),
            "opt_r": self.opt_r.state_dict(),
            "rng": self.gen.get_state(),
            "counters": asdict(self.counters),
            "pairs": self.pairs,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        for name in ("generator", "ema", "fake", "ratio", "opt_g", "opt_f", "opt_r"):
            getattr(self, name).load_state_dict(state[name])
        self.gen.set_state(state["rng"])
        self.step_count = int(state["step"])
        self.counters = Counters(**state["counters"])
        pairs = state["pairs"]
        self.pairs = None if pairs is None else tuple(None if t is None else t.to(self.device) for t in pairs)
