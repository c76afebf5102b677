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
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from uni3d.devices import resolve_device
from uni3d.diffusion.edm import heun_sample, lognormal_sigma, rho_time_sigma
from uni3d.engine import Counters, Denoised, DistillationLoop, Draw, LoopSettings, Part
from uni3d.errors import UsageError
from uni3d.losses import fake_score_loss, get_preset, regression_loss
from uni3d.models.edm.denoiser import EDMDenoiser, OneStepGenerator
from uni3d.models.frozen import frozen
from uni3d.models.ratio_heads import ConvRatioHead
from uni3d.tasks.images.distill_config import DistillConfig
from uni3d.tasks.images.image_data import ImageSource, check_data


@dataclass(frozen=True)
class World:
    """This process's rank, the number of processes (``1``: no ``torch.distributed``) and its rank on its node
    (``torchrun``'s ``LOCAL_RANK``: which GPU it takes)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0


class ImageDistiller:
    """Networks, optimizers, random state and the three alternating updates of one run (or one rank of it)."""

    def __init__(self, cfg: DistillConfig, teacher: EDMDenoiser, data: ImageSource, world: World = World()) -> None:
        if cfg.batch_size % world.size:
            raise UsageError(f"batch size {cfg.batch_size} must be a multiple of the {world.size} processes")
        self.cfg, self.data, self.world = cfg, data, world
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and world.size > 1:  # one GPU per process, by its rank on the node
            self.device = torch.device("cuda", world.local_rank % torch.cuda.device_count())
        self.preset = get_preset(cfg.preset)
        self.needs_head = self.preset.uses_ratio or cfg.gan_weight > 0
        check_data(data, num_classes=teacher.num_classes, needs_images=self.needs_head)
        self.teacher = teacher.requires_grad_(False).eval().to(self.device)
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.generator = OneStepGenerator(teacher, cfg.sigma_init).requires_grad_(True)
        self.ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.fake = copy.deepcopy(teacher).requires_grad_(True)
        self.ratio = ConvRatioHead(teacher.net.cfg.channels[-1], cfg.ratio_width).to(self.device)
        self._generator_call = self._wrap(self.generator)
        self._fake_call = self._wrap(self.fake)
        self._ratio_call = self._wrap(self.ratio)
        betas = (cfg.adam_beta1, 0.999)
        learned = self.preset.fake_score == "learned"
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr_generator, betas=betas)
        opt_f = torch.optim.Adam(self.fake.parameters(), lr=cfg.lr_fake, betas=betas)
        opt_r = torch.optim.Adam(self.ratio.parameters(), lr=cfg.lr_ratio, betas=betas)
        self.loop = DistillationLoop(
            self,
            self.preset,
            Part("generator", self.generator, opt_g, optimizer_key="opt_g", clip=cfg.grad_clip),
            fake=Part("fake", self.fake, opt_f, optimizer_key="opt_f") if learned else None,
            ratio=Part("ratio", self.ratio, opt_r, optimizer_key="opt_r") if self.needs_head else None,
            settings=LoopSettings(
                warmup_steps=cfg.warmup_steps, ratio_clamp=cfg.ratio_clamp, ratio_motion=cfg.ratio_motion
            ),
            ema=self.ema,
            ema_decay=lambda step: min(cfg.ema, (step + 1) / (step + 10)),
            reduce=self._global_mean,
        )
        self.pairs = self._regression_pairs() if self.preset.regression_weight > 0 else None

    def _wrap(self, module: nn.Module) -> nn.Module:
        if self.world.size == 1:
            return module
        return DistributedDataParallel(module, device_ids=None if self.device.type == "cpu" else [self.device.index])

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
        return self._randn((self.cfg.batch_size, *self.data.image_shape))

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
        z = torch.randn((self.cfg.regression_pairs, *self.data.image_shape), generator=self.gen)
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

    def _gen_sigma(self) -> Tensor:
        """Noise levels of the generator loss and the ratio head (``gen_sigma``), cut at ``gen_sigma_min``."""
        cfg = self.cfg
        if cfg.gen_sigma == "rho":
            sigma = rho_time_sigma(cfg.batch_size, cfg.gen_t_max, self.gen, cfg.gen_sigma_min)
            return self._share(sigma.to(self.device))
        return self._sigma(cfg.gen_p_mean, cfg.gen_p_std, cfg.gen_sigma_min)

    # ---- what the shared loop asks for ---------------------------------------------------------------------------

    def draw(self, step: int, *, train_generator: bool) -> Draw:
        """``x0 = G(z, labels)`` of one batch; while training the generator, DMD's regression pairs ride in the
        same forward (context: ``(labels, (prediction, target) or None)``)."""
        z, labels = self._image_noise(), self._labels()
        if not train_generator:
            with torch.no_grad():
                return Draw(self.generator(z, labels), (labels, None))
        regression_target = None
        if self.pairs is not None:
            pair_z, pair_labels, target = self.pairs
            idx = self._indices(pair_z.shape[0])
            z = torch.cat([z, pair_z[idx]])
            labels = None if labels is None else torch.cat([labels, pair_labels[idx]])
            regression_target = target[idx]
        out = self._generator_call(z, labels)
        n = out.shape[0] if regression_target is None else out.shape[0] // 2
        labels = None if labels is None else labels[:n]
        regression = None if regression_target is None else (out[n:], regression_target)
        return Draw(out[:n], (labels, regression))

    def fake_score_loss(self, draw: Draw) -> Tensor:
        """Denoising loss of ``D_p`` on ``sg(x0)`` (EDM weighting, :func:`uni3d.losses.fake_score_loss`)."""
        x0, (labels, _) = draw.x0, draw.context
        sigma = self._sigma(self.cfg.fake_p_mean, self.cfg.fake_p_std)
        x_t = x0.detach() + sigma[:, None, None, None] * self._image_noise()
        d_pred = self._fake_call(x_t, sigma, labels)
        return fake_score_loss(d_pred, x0, sigma, "edm", self.fake.sigma_data).mean()

    def ratio_logits(self, draw: Draw, denoised: Denoised | None) -> tuple[Tensor, Tensor]:
        """Ratio head on ``D_p``'s bottleneck (METHOD.md section 5): real = noised data, fake = noised ``sg(x0)``."""
        x0, (labels, _) = draw.x0, draw.context
        n = x0.shape[0]
        sigma = self._gen_sigma()
        idx = self._indices(len(self.data))
        real = self.data.batch(idx).to(self.device) + sigma[:, None, None, None] * self._image_noise()
        fake = x0.detach() + sigma[:, None, None, None] * self._image_noise()
        real_labels = None if labels is None else self.data.labels[idx].to(self.device)  # type: ignore[index]
        both_labels = None if labels is None else torch.cat([real_labels, labels])
        with torch.no_grad():
            features = self.fake.bottleneck(torch.cat([real, fake]), sigma.repeat(2), both_labels)
        logits = self._ratio_call(features)
        return logits[:n], logits[n:]

    def denoise(self, draw: Draw) -> Denoised:
        """Noise levels, ``x_t``, the teacher's and the fake score's denoisers (frozen parameters, live input when
        the preset needs it) and the ratio logits; one ``D_p`` pass gives ``d_fake`` and the head's features."""
        x0, (labels, _) = draw.x0, draw.context
        sigma = self._gen_sigma()
        x_t = x0 + sigma[:, None, None, None] * self._image_noise()
        live = self.preset.needs_input_grad
        x_in = x_t if live else x_t.detach()
        d_fake, logits = None, None
        with torch.set_grad_enabled(live), frozen(self.fake):
            d_real = self.teacher(x_in, sigma, labels)
            if self.preset.fake_score == "learned":
                d_fake, features = self.fake.with_features(x_in, sigma, labels)
                if self.preset.uses_ratio:
                    with torch.no_grad():
                        logits = self.ratio(features.detach())
        return Denoised(x_t=x_t, sigma=sigma, d_real=d_real, d_fake=d_fake, ratio_logits=logits)

    def extra_loss(self, draw: Draw) -> Tensor | None:
        """DMD's regression ``(prediction, target)`` term and the adversarial term (:meth:`adversarial_loss`),
        each weighted; ``None`` without either."""
        regression = draw.context[1]
        terms = []
        if regression is not None:
            terms.append(self.preset.regression_weight * regression_loss(*regression).mean())
        if self.cfg.gan_weight > 0:
            terms.append(self.cfg.gan_weight * self.adversarial_loss(draw))
        return sum(terms[1:], terms[0]) if terms else None

    def adversarial_loss(self, draw: Draw) -> Tensor:
        """SiDA's generator GAN term (Zhou et al. 2025, used by Uni-Instruct): ``softplus(-l(x_t))``, ``l`` the ratio
        head's logit on the fake score's encoder at the generator's noised sample (frozen networks, live input),
        divided per sample by SiD's normaliser ``mean |x0 - D_q(x_t)|``; the head trained by balanced BCE is the
        discriminator."""
        x0, (labels, _) = draw.x0, draw.context
        sigma = self._gen_sigma()
        x_t = x0 + sigma[:, None, None, None] * self._image_noise()
        with torch.no_grad():
            scale = (x0 - self.teacher(x_t, sigma, labels)).abs().flatten(1).mean(1).clamp_min(1e-5)
        with frozen(self.fake), frozen(self.ratio):
            logits = self.ratio(self.fake.bottleneck(x_t, sigma, labels))
        return (nn.functional.softplus(-logits.reshape(-1)) / scale).mean()

    # ---- state ---------------------------------------------------------------------------------------------------

    @property
    def step_count(self) -> int:
        return self.loop.step_count

    def step(self) -> None:
        """One step of the shared loop: fake score, ratio head, generator, EMA (fake score and ratio head only
        during the first ``warmup_steps``)."""
        self.loop.step()

    def state(self) -> dict[str, Any]:
        """Everything needed to continue bit-for-bit (the teacher is re-read from its file)."""
        return {
            **self.loop.training_state(),
            "rng": self.gen.get_state(),
            "counters": self.loop.counters.report("skip"),
            "pairs": self.pairs,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.loop.load_training_state(state)
        self.gen.set_state(state["rng"])
        self.loop.counters = Counters.restore(state["counters"])
        pairs = state["pairs"]
        self.pairs = None if pairs is None else tuple(None if t is None else t.to(self.device) for t in pairs)
