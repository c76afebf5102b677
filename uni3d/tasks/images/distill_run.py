"""``uni3d distill``: run folder, resume, periodic sample grids, scores and ``metrics.csv`` of a distillation.

The run folder holds ``config.json``, ``checkpoint.pt`` (the same command continues bit-for-bit),
``generator.pt`` (the EMA generator as a denoiser file plus ``sigma_init``), ``metrics.csv`` (losses,
gradient norm, counters; FID, accuracy and entropies of the EMA generator every ``eval_every`` steps) and
``samples/step_NNNNNN.png`` (EMA generator, fixed noise, one column per class when class-conditional) and
``curves.png`` (FID against training CPU seconds, redrawn at every evaluation).

Under ``torchrun`` (``WORLD_SIZE > 1``) every rank trains its slice of the global batch
(:class:`~uni3d.tasks.images.distill.ImageDistiller`); only rank 0 evaluates and writes files.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from tqdm import tqdm

from uni3d.devices import resolve_device
from uni3d.errors import UsageError
from uni3d.io import save_json
from uni3d.models.edm.denoiser import EDMDenoiser
from uni3d.models.edm.pickle_teacher import load_edm_teacher
from uni3d.tasks.images.curves import fid_curves_png
from uni3d.tasks.images.data import ImageSet
from uni3d.tasks.images.distill import ImageDistiller, World
from uni3d.tasks.images.distill_config import (
    NAMED_FEATURES,
    NAMED_TEACHERS,
    RESUMABLE_CHANGES,
    DistillConfig,
    resolve_file,
)
from uni3d.tasks.images.features import FEATURE_SHAPE, FeatureNet, load_feature_net
from uni3d.tasks.images.fid import FeatureStats, SampleScores, features_and_probs, score_samples
from uni3d.tasks.images.files import (
    check_resumable,
    denoiser_record,
    image_grid_png,
    load_denoiser,
    load_torch,
    save_torch,
    weights_digest,
    write_csv,
)
from uni3d.tasks.images.image_data import ImageSource, load_image_data

TEACHER_COMMAND = "uni3d train-teacher --dataset mnist --out runs/teacher (then pass --teacher runs/teacher)"
FEATURES_COMMAND = "uni3d train-features --out assets/mnist_features.pt"


@dataclass(frozen=True)
class Evaluator:
    """Fixed evaluation noise and labels, the feature net and the training split's reference statistics."""

    net: FeatureNet
    reference: FeatureStats
    noise: Tensor
    labels: Tensor | None

    @torch.no_grad()
    def samples(self, distiller: ImageDistiller, batch: int = 250) -> Tensor:
        """EMA-generator samples of the fixed noise (on the distiller's device), returned on the CPU."""
        gen, dev = distiller.ema, distiller.device
        chunks = []
        for i in range(0, self.noise.shape[0], batch):
            labels = None if self.labels is None else self.labels[i : i + batch].to(dev)
            chunks.append(gen(self.noise[i : i + batch].to(dev), labels).cpu())
        return torch.cat(chunks)

    def scores(self, distiller: ImageDistiller) -> SampleScores:
        return score_samples(self.net, self.samples(distiller), self.reference, self.labels)


def make_evaluator(
    features: str, num_classes: int, data: ImageSource, *, samples: int, seed: int = DistillConfig.eval_seed
) -> Evaluator | None:
    """The evaluator of the feature net ``features`` (``none``: no scores, only sample grids) on ``samples`` fixed
    noise images; its reference statistics are those of all of ``data``, which must be held in memory and fit the
    feature net (MNIST-sized digits)."""
    if features == "none":
        return None
    if not isinstance(data, ImageSet) or data.image_shape != FEATURE_SHAPE:
        raise UsageError(
            f"the FID feature net scores {'x'.join(map(str, FEATURE_SHAPE))} digits held in memory, not this data: "
            "pass --features none (and score samples with uni3d fid)"
        )
    net = load_feature_net(resolve_file(features, NAMED_FEATURES, "features.pt", "feature net", FEATURES_COMMAND))
    reference = FeatureStats.of(features_and_probs(net, data.images)[0])
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(samples, *data.image_shape, generator=gen)
    labels = torch.arange(samples) % num_classes if num_classes else None
    return Evaluator(net, reference, noise, labels)


def _grid(distiller: ImageDistiller, out: Path) -> None:
    n, nc = 100, distiller.num_classes
    noise = torch.randn(n, *distiller.data.image_shape, generator=torch.Generator().manual_seed(1234))
    with torch.no_grad():
        images = distiller.ema(noise.to(distiller.device), (torch.arange(n) % nc).to(distiller.device) if nc else None)
    image_grid_png(out / "samples" / f"step_{distiller.step_count:06d}.png", images)


def save_run(
    distiller: ImageDistiller,
    cfg: DistillConfig,
    rows: list[dict[str, Any]],
    out: Path,
    cpu_seconds: float,
    *,
    teacher_digest: str,
) -> None:
    """Checkpoint (with the teacher's :func:`weights_digest`), EMA generator file and metrics CSV (all atomic)."""
    state = {**distiller.state(), "config": cfg.as_dict(), "rows": rows, "cpu_seconds": cpu_seconds}
    state["teacher_digest"] = teacher_digest
    save_torch(out / "checkpoint.pt", state)
    record = {**denoiser_record(distiller.ema.denoiser), "sigma_init": cfg.sigma_init, "step": distiller.step_count}
    save_torch(out / "generator.pt", record)
    write_csv(out / "metrics.csv", rows)


def init_world(device: str = "cpu") -> World:
    """The ``torchrun`` world from ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``: NCCL when the run asks for CUDA (one
    GPU per process), gloo on the CPU; a single process without them."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = resolve_device(device).type == "cuda"
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local % torch.cuda.device_count())
        dist.init_process_group("nccl" if cuda else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), local)


def check_teacher(teacher: EDMDenoiser, data: ImageSource) -> None:
    """One-line error when the teacher's channels or resolution differ from the data's."""
    if teacher.image_shape != data.image_shape:
        raise UsageError(
            f"the teacher is made for {'x'.join(map(str, teacher.image_shape))} images, "
            f"the data is {'x'.join(map(str, data.image_shape))} (resolution or channel mismatch)"
        )


def load_teacher(spec: str, data: ImageSource | None) -> EDMDenoiser:
    """The teacher named by ``spec`` (``mnist``, a ``teacher.pt`` or run folder, or an NVlabs EDM ``.pkl``).

    An EDM pickle is read with the restricted unpickler, checked against the data's resolution and channels
    (``data=None``: no data to check against) and rebuilt as uni3d's SongUNet / DhariwalUNet inside its
    preconditioning (:mod:`uni3d.models.edm.pickle_teacher`).
    """
    path = resolve_file(spec, NAMED_TEACHERS, "teacher.pt", "teacher", TEACHER_COMMAND)
    if path.suffix == ".pkl":
        if data is None:
            return load_edm_teacher(path)
        c, h, _ = data.image_shape
        return load_edm_teacher(path, resolution=h, channels=c)
    teacher = load_denoiser(path)
    if data is not None:
        check_teacher(teacher, data)
    return teacher


def teacher_and_data(teacher: str, data: str) -> tuple[EDMDenoiser, ImageSource]:
    """The teacher and the data of a run, checked against each other (``data='none'``: the teacher's shape)."""
    if data == "none":
        model = load_teacher(teacher, None)
        return model, load_image_data("none", teacher_shape=model.image_shape)
    source = load_image_data(data)
    return load_teacher(teacher, source), source


def _legacy_teacher_digest(config: dict[str, Any]) -> str | None:
    """The teacher digest of a checkpoint written before checkpoints held one: ``mnist`` then named the first
    embedded teacher (``mnist-v1`` now); any other teacher is unknown (``None``: compared by name only)."""
    if config.get("teacher", "mnist") != "mnist":
        return None
    return weights_digest(load_denoiser(NAMED_TEACHERS["mnist-v1"]))


def run_distill(cfg: DistillConfig, out: Path, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Distill (or continue distilling) in ``out`` up to ``cfg.steps``; return the last metrics row."""
    ckpt = out / "checkpoint.pt"
    if resume and not ckpt.exists():
        raise UsageError(f"--resume given but {ckpt} does not exist")
    resolve_device(cfg.device)
    teacher, data = teacher_and_data(cfg.teacher, cfg.data)
    world = init_world(cfg.device)
    distiller = ImageDistiller(cfg, teacher, data, world)
    lead = world.rank == 0
    rows: list[dict[str, Any]] = []
    cpu_seconds = 0.0
    teacher_digest = weights_digest(teacher)
    if ckpt.exists():
        state = load_torch(ckpt)
        saved_digest = state.get("teacher_digest") or _legacy_teacher_digest(state["config"])
        # a known teacher is compared by its weights, so its name may change (mnist -> mnist-v1); else by name
        allowed = (*RESUMABLE_CHANGES, "teacher") if saved_digest is not None else RESUMABLE_CHANGES
        check_resumable(state["config"], cfg.as_dict(), out, allowed, DistillConfig().as_dict())
        if saved_digest is not None and saved_digest != teacher_digest:
            raise UsageError(
                f"{out} was distilled from another teacher than --teacher {cfg.teacher} gives now (its weights "
                "differ); pass that run's teacher file (the earlier embedded one is 'mnist-v1'), or use another --out"
            )
        distiller.load_state(state)
        rows = list(state["rows"])
        cpu_seconds = float(state.get("cpu_seconds", 0.0))
    evaluator = (
        make_evaluator(cfg.features, distiller.num_classes, data, samples=cfg.eval_samples, seed=cfg.eval_seed)
        if lead
        else None
    )
    if lead:
        save_json(out / "config.json", cfg.as_dict())
    total, start = cfg.steps, min(distiller.step_count, cfg.steps)
    bar = tqdm(total=total, initial=start, desc=cfg.preset, disable=not (progress and lead))
    while distiller.step_count < cfg.steps:
        t0 = time.process_time()
        distiller.step()
        cpu_seconds += time.process_time() - t0
        bar.update(1)
        step = distiller.step_count
        bar.set_postfix({k: f"{v:.3g}" for k, v in distiller.loop.last.items() if k != "grad_norm"}, refresh=False)
        if not lead:
            continue
        evaluate = evaluator is not None and (step % cfg.eval_every == 0 or step == total)
        if evaluate or step % cfg.checkpoint_every == 0 or step == total:
            row: dict[str, Any] = {
                "step": step,
                "cpu_seconds": round(cpu_seconds, 2),
                **distiller.loop.last,
                **distiller.loop.counters.report("skip"),
            }
            if evaluate:
                row.update(evaluator.scores(distiller).as_dict())
            rows.append(row)
            save_run(distiller, cfg, rows, out, cpu_seconds, teacher_digest=teacher_digest)
            if evaluate:
                fid_curves_png(out / "curves.png", [(cfg.preset, rows)])
        if step % cfg.sample_every == 0 or step == total:
            _grid(distiller, out)
    bar.close()
    if world.size > 1:
        dist.barrier()
    return rows[-1] if rows else {"step": distiller.step_count}
