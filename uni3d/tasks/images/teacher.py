"""``uni3d train-teacher``: an EDM-preconditioned UNet trained with EDM's denoising loss (EDM eq. 2, Table 1).

Per step: a batch of training digits, ``ln sigma ~ N(-1.2, 1.2^2)``, the loss ``lambda(sigma) ||D(x + sigma n;
sigma) - x||^2`` (:func:`uni3d.losses.fake_score_loss` with EDM weighting), Adam, EMA of the weights. Every
``eval_every`` steps the EMA teacher is scored (FID, accuracy and entropy of Heun samples at ``eval_nfe``). The
run folder holds ``config.json``, ``checkpoint.pt`` (everything needed to continue: the same command resumes
bit-for-bit), ``teacher.pt`` (the EMA denoiser, the file the distiller reads), ``metrics.csv``, ``curves.png``
(FID against steps) and ``samples/step_NNNNNN.png`` (EMA teacher, Heun sampler, one row per class when
class-conditional).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from uni3d.config import build_config
from uni3d.diffusion.edm import heun_sample, heun_steps, lognormal_sigma
from uni3d.diffusion.ema import ema_update
from uni3d.errors import UsageError
from uni3d.io import save_json
from uni3d.losses import fake_score_loss
from uni3d.models.edm.denoiser import EDMDenoiser
from uni3d.models.edm.unet import UNetConfig
from uni3d.tasks.images.curves import fid_curves_png
from uni3d.tasks.images.data import NUM_CLASSES, load_dataset
from uni3d.tasks.images.distill_run import Evaluator, make_evaluator
from uni3d.tasks.images.fid import score_samples
from uni3d.tasks.images.files import check_resumable, denoiser_record, image_grid_png, load_torch, save_torch, write_csv

RESUMABLE_CHANGES = (
    "steps",
    "decay_start",
    "decay_steps",
    "sample_every",
    "checkpoint_every",
    "eval_every",
    "eval_nfe",
    "eval_samples",
    "features",
)
"""Settings a resumed run may change; any other difference from the saved config is an error."""


@dataclass(frozen=True)
class TeacherConfig:
    """Everything a teacher run depends on; saved as ``config.json`` and inside every checkpoint."""

    dataset: str = "mnist"
    steps: int = 8000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 200
    decay_start: int = 0
    decay_steps: int = 0
    """With ``decay_steps > 0``: after step ``decay_start`` the lr falls linearly to zero over ``decay_steps``
    steps (a final anneal of a constant-lr run). Resumable: it changes nothing before ``decay_start``."""
    ema: float = 0.999
    seed: int = 0
    sigma_data: float = 0.5
    checkpoint_every: int = 250
    sample_every: int = 1000
    sample_nfe: int = 17
    eval_every: int = 2000
    """Steps between scores of the EMA teacher (0: never): FID, accuracy and entropy of ``eval_samples`` Heun
    samples at ``eval_nfe`` in ``metrics.csv`` and ``curves.png``; they use fixed noise, never the training stream."""
    eval_nfe: int = 35
    eval_samples: int = 1000
    features: str = "mnist"
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(channels=(16, 32, 64), num_classes=NUM_CLASSES))

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0 or not 0 <= self.ema < 1:
            raise UsageError(
                f"need steps >= 0, batch size >= 1, lr > 0, 0 <= ema < 1; got {self.steps}, {self.batch_size}, "
                f"{self.lr:g}, {self.ema:g}"
            )
        if self.decay_start < 0 or self.decay_steps < 0:
            raise UsageError(f"decay start and steps must be >= 0; got {self.decay_start}, {self.decay_steps}")
        if self.decay_steps and self.steps > self.decay_start + self.decay_steps:
            raise UsageError(
                f"--steps {self.steps} runs past the lr decay's end (step {self.decay_start + self.decay_steps}), "
                "where the lr is zero; give fewer steps or a later --decay-start"
            )
        if self.checkpoint_every < 1 or self.sample_every < 1 or self.eval_every < 0 or self.eval_samples < 2:
            raise UsageError("checkpoint and sample intervals must be >= 1, eval_every >= 0, eval_samples >= 2")
        heun_steps(self.sample_nfe)
        heun_steps(self.eval_nfe)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["unet"]["channels"] = list(self.unet.channels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TeacherConfig:
        return build_config(cls, data, "teacher")


def lr_factor(cfg: TeacherConfig, step: int) -> float:
    """The lr multiplier at ``step``: linear warm-up, then 1, then the optional linear decay to zero."""
    factor = min(1.0, step / max(cfg.warmup_steps, 1))
    if cfg.decay_steps > 0 and step > cfg.decay_start:
        factor *= max(0.0, 1.0 - (step - cfg.decay_start) / cfg.decay_steps)
    return factor


def sample_grid(model: EDMDenoiser, nfe: int, n: int = 100, seed: int = 1234) -> Tensor:
    """Heun samples from fixed noise; class ``i % 10`` for sample ``i`` (each grid column one class)."""
    size = (n, model.net.cfg.in_channels, model.net.cfg.resolution, model.net.cfg.resolution)
    noise = torch.randn(size, generator=torch.Generator().manual_seed(seed))
    labels = torch.arange(n) % max(model.num_classes, 1) if model.num_classes else None
    return heun_sample(lambda x, s: model(x, s, labels), noise, nfe)


class TeacherRun:
    """Model, EMA, optimizer, random state and log of one teacher run; :meth:`step` is one training step."""

    def __init__(self, cfg: TeacherConfig) -> None:
        self.cfg = cfg
        data = load_dataset(cfg.dataset, "train")
        self.images, self.labels = data.images, data.labels
        if cfg.unet.num_classes and int(self.labels.max()) >= cfg.unet.num_classes:
            raise UsageError(f"the data has labels up to {int(self.labels.max())}: num_classes is too small")
        torch.manual_seed(cfg.seed)
        self.model = EDMDenoiser.build(cfg.unet, cfg.sigma_data)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.step_count = 0
        self.nonfinite_steps = 0
        self.rows: list[dict[str, Any]] = []
        self._losses: list[float] = []

    def step(self) -> None:
        """One EDM training step; a non-finite loss is counted and the update skipped."""
        cfg = self.cfg
        idx = torch.randint(self.images.shape[0], (cfg.batch_size,), generator=self.gen)
        x0 = self.images[idx]
        labels = self.labels[idx] if cfg.unet.num_classes else None
        sigma = lognormal_sigma(cfg.batch_size, generator=self.gen)
        x_t = x0 + sigma[:, None, None, None] * torch.randn(x0.shape, generator=self.gen)
        loss = fake_score_loss(self.model(x_t, sigma, labels), x0, sigma, "edm", cfg.sigma_data).mean()
        self.step_count += 1
        if not torch.isfinite(loss):
            self.nonfinite_steps += 1
            return
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(cfg, self.step_count)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        ema_update(self.ema, self.model, min(cfg.ema, (1 + self.step_count) / (10 + self.step_count)))
        self._losses.append(float(loss.detach()))

    def log_row(self) -> None:
        """Append the mean loss since the last row to the metrics rows."""
        mean = sum(self._losses) / len(self._losses) if self._losses else math.nan
        self.rows.append({"step": self.step_count, "loss": mean, "nonfinite_steps": self.nonfinite_steps})
        self._losses = []

    def state(self) -> dict[str, Any]:
        return {
            "config": self.cfg.as_dict(),
            "step": self.step_count,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "opt": self.opt.state_dict(),
            "rng": self.gen.get_state(),
            "nonfinite_steps": self.nonfinite_steps,
            "rows": self.rows,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["rng"])
        self.step_count = int(state["step"])
        self.nonfinite_steps = int(state["nonfinite_steps"])
        self.rows = list(state["rows"])


@torch.no_grad()
def teacher_scores(model: EDMDenoiser, evaluator: Evaluator, nfe: int, chunk: int = 250) -> dict[str, Any]:
    """FID (``fid``), accuracy and entropies of the teacher's Heun samples of the evaluator's noise at ``nfe``."""
    images = []
    for i in range(0, evaluator.noise.shape[0], chunk):
        labels = None if evaluator.labels is None else evaluator.labels[i : i + chunk]
        images.append(heun_sample(lambda x, s, y=labels: model(x, s, y), evaluator.noise[i : i + chunk], nfe))
    scores = score_samples(evaluator.net, torch.cat(images), evaluator.reference, evaluator.labels)
    return {f"{k}_nfe{nfe}" if k != "fid" else "fid": v for k, v in scores.as_dict().items()}


def save_run(run: TeacherRun, out: Path) -> None:
    """Checkpoint, EMA teacher file, metrics CSV (all atomic)."""
    save_torch(out / "checkpoint.pt", run.state())
    save_torch(out / "teacher.pt", {**denoiser_record(run.ema), "step": run.step_count})
    write_csv(out / "metrics.csv", run.rows)


def _check_decay_change(saved: TeacherConfig, cfg: TeacherConfig, step: int, out: Path) -> None:
    """A resumed run may add or move the lr decay only where it has not begun (steps after ``decay_start`` decay):
    the lr of every step already trained must stay what it was."""
    if (saved.decay_start, saved.decay_steps) == (cfg.decay_start, cfg.decay_steps):
        return
    starts = [c.decay_start for c in (saved, cfg) if c.decay_steps]
    if not starts or step <= min(starts):
        return
    raise UsageError(
        f"{out} is at step {step}, past the start of its lr decay (or the new one's): the decay settings cannot "
        "change there; use the run's own --decay-start and --decay-steps, or another --out"
    )


def train_teacher(cfg: TeacherConfig, out: Path, resume: bool = False, progress: bool = True) -> TeacherRun:
    """Train (or continue) the teacher in ``out`` up to ``cfg.steps`` steps.

    An existing ``out/checkpoint.pt`` is continued (``resume=True`` additionally requires one to exist).
    """
    ckpt = out / "checkpoint.pt"
    if resume and not ckpt.exists():
        raise UsageError(f"--resume given but {ckpt} does not exist")
    run = TeacherRun(cfg)
    if ckpt.exists():
        state = load_torch(ckpt)
        saved = TeacherConfig.from_dict(state["config"]).as_dict()  # fills settings added since (defaults)
        check_resumable(saved, cfg.as_dict(), out, RESUMABLE_CHANGES)
        _check_decay_change(TeacherConfig.from_dict(saved), cfg, int(state["step"]), out)
        run.load_state(state)
    save_json(out / "config.json", cfg.as_dict())
    evaluator = None
    if cfg.eval_every and cfg.features != "none":
        data = load_dataset(cfg.dataset, "train")
        evaluator = make_evaluator(cfg.features, cfg.unet.num_classes, data, samples=cfg.eval_samples)
    bar = tqdm(total=cfg.steps, initial=min(run.step_count, cfg.steps), desc="teacher", disable=not progress)
    while run.step_count < cfg.steps:
        run.step()
        bar.update(1)
        if run._losses:
            bar.set_postfix(loss=f"{run._losses[-1]:.4f}", refresh=False)
        evaluate = evaluator is not None and run.step_count % cfg.eval_every == 0
        if run.step_count % cfg.checkpoint_every == 0 or run.step_count == cfg.steps or evaluate:
            run.log_row()
            if evaluate:
                run.rows[-1].update(teacher_scores(run.ema, evaluator, cfg.eval_nfe))
                fid_curves_png(out / "curves.png", [(f"EMA teacher, NFE {cfg.eval_nfe}", run.rows)], x="step")
            save_run(run, out)
        if run.step_count % cfg.sample_every == 0 or run.step_count == cfg.steps:
            image_grid_png(out / "samples" / f"step_{run.step_count:06d}.png", sample_grid(run.ema, cfg.sample_nfe))
    bar.close()
    return run
