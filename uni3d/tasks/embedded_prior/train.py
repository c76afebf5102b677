"""``uni3d train-prior``: the embedded prior, a small latent diffusion model in Stable Diffusion's folder layout.

Two phases on one step counter, both from the tiny SD pipeline of :mod:`uni3d.models.tiny_sd`:

1. VAE (``vae_steps``): :class:`~diffusers.AutoencoderKL` on the dataset images in ``[-1, 1]``; loss
   ``(1 + fg_weight alpha) |x - dec(z)|^2 + kl_weight KL(q(z|x) || N(0, I))`` with ``z`` drawn from the posterior
   (Rombach et al. 2022, section 3, without the perceptual and GAN terms: the images are shaded primitives; the
   object mask ``alpha`` up-weights the object, a small part of each image whose colour is what prompts name). Then the latents of
   the whole set (posterior means) are cached and the VAE's ``scaling_factor`` is set to ``1 / std`` of them
   (SD's convention: unit-variance latents).
2. Diffusion (``steps``): UNet2DConditionModel and CLIP text encoder trained jointly (a random text encoder
   would need far more steps to be read) with the DDPM loss in the scheduler's prediction type,
   ``w(t) |target - net(alpha_t z + sigma_t eps, t, text)|^2`` at uniform ``t``, ``target = eps`` (or ``v``), and
   the Min-SNR weight ``w = min(SNR, gamma) / SNR`` (``/(SNR + 1)`` for v; Hang et al. 2023) for fast convergence:
   in ``x0`` units (``|eps - eps^|^2 = SNR |x0 - x0^|^2``, ``|v - v^|^2 = (SNR + 1) |x0 - x0^|^2``) the weight is
   ``min(SNR, gamma)``. ``snr_floor`` raises it to ``clamp(SNR, snr_floor, gamma)``: at high noise, where ``x_t``
   shows almost nothing of the image and only the caption can tell its layout (the camera words of the ``angles``
   view scheme: an object's turn, elevation and size), Min-SNR weights the ``x0`` error by ``SNR`` (0.005 at
   ``t = 999``) and the network hardly learns to read those words; a floor of 1 weights it as EDM's and
   v-prediction's losses do there (Karras et al. 2022, ``lambda(sigma) = (sigma^2 + 1) / sigma^2`` at unit data
   std). Score distillation reads the prior at exactly those levels.
   Captions are replaced by ``""`` with probability ``cond_drop`` (classifier-free guidance, Ho & Salimans 2022).
   An EMA of the UNet and text encoder is what gets exported.

``init_from`` (``--init-from``) starts from a saved pipeline instead (fine-tuning, e.g. the shipped prior with more
diffusion steps): its VAE, ``scaling_factor``, UNet and text encoder; the VAE phase is skipped, the diffusion
phase runs ``steps`` more steps with fresh optimizers (and the warm-up again), the EMA starts at the loaded weights.
A pipeline whose tokenizer is an older caption vocabulary (a prefix of :func:`build_clip_tokenizer`'s, same ids)
gets the current one and new embedding rows for the new words, so a prior can learn a new view scheme's words.
The exported folder names the dataset's view scheme (:func:`uni3d.models.views.save_view_scheme`).

Every random draw comes from one seeded :class:`torch.Generator` whose state is checkpointed with the models and
optimizers, so an interrupted run continues where it stopped when the same command is repeated (and a larger
``--steps`` extends a finished run). Checkpoints, ``metrics.csv`` and ``config.json`` are written atomically.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from torch import Tensor, nn
from tqdm import tqdm

from uni3d.errors import UsageError
from uni3d.io import atomic_write, save_json
from uni3d.models.sampling import sample_images, with_parts
from uni3d.models.tiny_sd import extend_vocabulary, save_pipeline, tiny_pipeline
from uni3d.models.views import ViewScheme
from uni3d.tasks.embedded_prior.dataset import ShapesDataset, load_shapes_dataset
from uni3d.tasks.embedded_prior.grid import image_grid, save_png

CHECKPOINT = "checkpoint.pt"
MAX_STEPS = 1_000_000
GRID_VIEWS: tuple[tuple[str, float, float], ...] = (
    ("a red sphere", 15.0, 0.0),
    ("a blue cube", 15.0, 90.0),
    ("a green cylinder", 15.0, 0.0),
    ("a yellow cone", 15.0, 90.0),
    ("a purple torus", 70.0, 0.0),
    ("an orange pyramid", 15.0, 30.0),
    ("a cube", 15.0, 180.0),
    ("a pink object", 15.0, 90.0),
)
"""``(subject, elevation, azimuth)`` of the sample grids written during training (one column each, two samples),
worded in the dataset's view scheme at apparent distance 3 ("a blue cube, side view")."""


@dataclass(frozen=True)
class PriorTrainConfig:
    """Everything that fixes a training run (``steps`` alone may grow when a finished run is extended)."""

    steps: int = 4000
    vae_steps: int = 600
    batch_size: int = 64
    vae_batch_size: int = 16
    lr: float = 1e-3
    vae_lr: float = 1e-3
    warmup: int = 100
    kl_weight: float = 1e-6
    fg_weight: float = 4.0
    cond_drop: float = 0.1
    snr_gamma: float = 5.0
    snr_floor: float = 0.0
    ema_decay: float = 0.999
    prediction_type: str = "epsilon"
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 25
    sample_every: int = 250
    sample_steps: int = 25
    guidance_scale: float = 3.0
    init_from: str | None = None
    width: int = 32

    def __post_init__(self) -> None:
        for name in ("steps", "vae_steps"):
            value = getattr(self, name)
            if not 1 <= value <= MAX_STEPS:
                flag = name.replace("_", "-")
                raise UsageError(f"--{flag} must be between 1 and {MAX_STEPS}, got {value}")
        for name in ("batch_size", "vae_batch_size", "checkpoint_every", "log_every", "sample_every", "sample_steps"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.width < 16 or self.width % 16:
            raise UsageError(f"--width must be a multiple of 16 (16, 32, 48, ...), got {self.width}")
        if not 0 <= self.cond_drop < 1:
            raise UsageError(f"cond_drop must be in [0, 1), got {self.cond_drop}")
        if not 0 <= self.ema_decay < 1:
            raise UsageError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if min(self.lr, self.vae_lr, self.snr_gamma) <= 0 or min(self.kl_weight, self.fg_weight, self.warmup) < 0:
            raise UsageError("lr, vae_lr, snr_gamma must be > 0 and kl_weight, fg_weight, warmup >= 0")
        if not 0 <= self.snr_floor <= self.snr_gamma:
            raise UsageError(f"--snr-floor must be in [0, snr_gamma = {self.snr_gamma:g}], got {self.snr_floor:g}")

    @property
    def total_steps(self) -> int:
        """VAE steps then diffusion steps, on one counter."""
        return self.vae_steps + self.steps


@dataclass
class PriorTrainResult:
    """Where the run put its outputs, and the last logged losses."""

    out: Path
    pipeline: Path
    vae_loss: float
    diffusion_loss: float
    seconds: float


@dataclass
class _State:
    """The trainable modules, their optimizers and EMA copies, the RNG and the metric rows: what a checkpoint holds."""

    pipe: StableDiffusionPipeline
    ema_unet: nn.Module
    ema_text: nn.Module
    vae_opt: torch.optim.Optimizer
    opt: torch.optim.Optimizer
    gen: torch.Generator
    step: int = 0
    scaling_factor: float = 1.0
    rows: list[dict[str, float | int | str]] | None = None
    seconds: float = 0.0


def _images(data: ShapesDataset) -> tuple[Tensor, Tensor]:
    """Images ``(N, 3, S, S)`` float32 in ``[-1, 1]`` and masks ``(N, 1, S, S)`` in ``[0, 1]``."""
    images = torch.from_numpy(data.images).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    return images, torch.from_numpy(data.alpha).unsqueeze(1).float().div(255)


def _token_table(pipe: StableDiffusionPipeline, captions: list[str]) -> tuple[Tensor, Tensor]:
    """Token ids ``(U + 1, 77)`` of the unique captions plus ``""`` (last row), and each item's row ``(N,)``."""
    unique = sorted(set(captions))
    row = {c: i for i, c in enumerate(unique)}
    ids = pipe.tokenizer(
        [*unique, ""], padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True
    ).input_ids
    return torch.tensor(ids), torch.tensor([row[c] for c in captions])


def _new_state(cfg: PriorTrainConfig, image_size: int) -> _State:
    if cfg.init_from is None:
        pipe = tiny_pipeline(cfg.prediction_type, cfg.seed, image_size // 2, width=cfg.width)
    else:
        pipe = _load_init(cfg.init_from, image_size)
    pipe.text_encoder.train()
    pipe.unet.train()
    pipe.vae.train()
    vae_opt = torch.optim.AdamW(pipe.vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    params = [*pipe.unet.parameters(), *pipe.text_encoder.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    ema_unet = copy.deepcopy(pipe.unet).requires_grad_(False).eval()
    ema_text = copy.deepcopy(pipe.text_encoder).requires_grad_(False).eval()
    gen = torch.Generator().manual_seed(cfg.seed)
    state = _State(pipe, ema_unet, ema_text, vae_opt, opt, gen, rows=[])
    if cfg.init_from is not None:  # the VAE phase is the loaded pipeline's
        state.step, state.scaling_factor = cfg.vae_steps, float(pipe.vae.config.scaling_factor)
    return state


def _load_init(folder: str, image_size: int) -> StableDiffusionPipeline:
    """The pipeline to fine-tune (``init_from``), its caption vocabulary extended (:func:`extend_vocabulary`);
    one-line error when it is not one or its image side differs."""
    from uni3d.tasks.embedded_prior.evaluate import load_pipeline

    pipe = load_pipeline(folder)
    side = int(pipe.unet.config.sample_size) * 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    if side != image_size:
        raise UsageError(f"--init-from {folder} makes {side}x{side} images, the dataset has {image_size}x{image_size}")
    return extend_vocabulary(pipe)


_MODULES = ("vae", "unet", "text_encoder")


def _save_checkpoint(state: _State, cfg: PriorTrainConfig, dataset_id: dict[str, int], path: Path) -> None:
    payload = {
        "config": asdict(cfg),
        "dataset": dataset_id,
        "step": state.step,
        "scaling_factor": state.scaling_factor,
        "rows": state.rows,
        "seconds": state.seconds,
        "gen": state.gen.get_state(),
        "models": {name: getattr(state.pipe, name).state_dict() for name in _MODULES},
        "ema_unet": state.ema_unet.state_dict(),
        "ema_text": state.ema_text.state_dict(),
        "vae_opt": state.vae_opt.state_dict(),
        "opt": state.opt.state_dict(),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write(path, buf.getvalue())


def _load_checkpoint(state: _State, cfg: PriorTrainConfig, dataset_id: dict[str, int], path: Path) -> None:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: torch raises several types
        raise UsageError(f"cannot read checkpoint {path} ({type(err).__name__}); delete it to start over") from err
    defaults = {f.name: f.default for f in fields(PriorTrainConfig)}  # settings newer than the checkpoint
    saved = {**defaults, **payload["config"], "steps": cfg.steps}
    if saved != asdict(cfg) or payload["dataset"] != dataset_id:
        changed = sorted(k for k in saved if saved[k] != asdict(cfg).get(k))
        what = ", ".join(changed) if changed else "the dataset"
        raise UsageError(f"{path} was written with other settings ({what}); use another --out or the original settings")
    if payload["step"] > cfg.total_steps:
        raise UsageError(f"{path} is at step {payload['step']}, beyond --steps {cfg.steps}; pass a larger --steps")
    for name in _MODULES:
        getattr(state.pipe, name).load_state_dict(payload["models"][name])
    state.ema_unet.load_state_dict(payload["ema_unet"])
    state.ema_text.load_state_dict(payload["ema_text"])
    state.vae_opt.load_state_dict(payload["vae_opt"])
    state.opt.load_state_dict(payload["opt"])
    state.gen.set_state(payload["gen"])
    state.step, state.scaling_factor = payload["step"], payload["scaling_factor"]
    state.rows, state.seconds = payload["rows"], payload["seconds"]


def _write_metrics(rows: list[dict[str, float | int | str]], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["step", "phase", "loss", "lr", "seconds"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buf.getvalue())


def _vae_step(state: _State, cfg: PriorTrainConfig, images: Tensor, alpha: Tensor) -> float:
    vae = state.pipe.vae
    idx = torch.randint(len(images), (cfg.vae_batch_size,), generator=state.gen)
    x = images[idx]
    posterior = vae.encode(x).latent_dist
    recon = vae.decode(posterior.sample(generator=state.gen)).sample
    weight = 1 + cfg.fg_weight * alpha[idx]
    loss = (weight * (recon - x).pow(2)).mean() + cfg.kl_weight * posterior.kl().mean() / x[0].numel()
    state.vae_opt.zero_grad(set_to_none=True)
    loss.backward()
    state.vae_opt.step()
    return loss.item()


@torch.no_grad()
def _cache_latents(vae: nn.Module, images: Tensor, batch: int = 256) -> Tensor:
    """Posterior means ``(N, 4, S/2, S/2)`` of all images (unscaled)."""
    vae.eval()
    return torch.cat([vae.encode(images[i : i + batch]).latent_dist.mean for i in range(0, len(images), batch)])


def _lr_at(step: int, cfg: PriorTrainConfig) -> float:
    """Linear warmup over ``warmup`` diffusion steps, then constant (so extending a run changes nothing before)."""
    return cfg.lr * min(1.0, (step + 1) / max(cfg.warmup, 1))


def loss_weight(snr: Tensor, cfg: PriorTrainConfig) -> Tensor:
    """The weight of the squared ``eps`` (or ``v``) error at ``snr`` that makes the ``x0``-space weight
    ``clamp(SNR, snr_floor, snr_gamma)`` (module docstring)."""
    x0_weight = snr.clamp(min=cfg.snr_floor, max=cfg.snr_gamma)
    return x0_weight / snr if cfg.prediction_type == "epsilon" else x0_weight / (snr + 1)


def _diffusion_step(
    state: _State, cfg: PriorTrainConfig, latents: Tensor, item_rows: Tensor, tokens: Tensor, step: int
) -> float:
    pipe, gen = state.pipe, state.gen
    sched = pipe.scheduler
    n = cfg.batch_size
    idx = torch.randint(len(latents), (n,), generator=gen)
    z0 = latents[idx] * state.scaling_factor
    rows = item_rows[idx].clone()
    rows[torch.rand(n, generator=gen) < cfg.cond_drop] = len(tokens) - 1  # the empty caption
    t = torch.randint(sched.config.num_train_timesteps, (n,), generator=gen)
    eps = torch.randn(z0.shape, generator=gen)
    z_t = sched.add_noise(z0, eps, t)
    context = pipe.text_encoder(tokens[rows])[0]
    out = pipe.unet(z_t, t, encoder_hidden_states=context).sample
    snr = sched.alphas_cumprod[t] / (1 - sched.alphas_cumprod[t])
    target = eps if cfg.prediction_type == "epsilon" else sched.get_velocity(z0, eps, t)
    weight = loss_weight(snr, cfg)
    loss = (weight * (out - target).pow(2).mean((1, 2, 3))).mean()
    for group in state.opt.param_groups:
        group["lr"] = _lr_at(step, cfg)
    state.opt.zero_grad(set_to_none=True)
    loss.backward()
    state.opt.step()
    decay = min(cfg.ema_decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for ema, live in ((state.ema_unet, pipe.unet), (state.ema_text, pipe.text_encoder)):
            for p_ema, p in zip(ema.parameters(), live.parameters(), strict=True):
                p_ema.lerp_(p, 1 - decay)
    return loss.item()


def _export_pipeline(state: _State) -> StableDiffusionPipeline:
    """The pipeline to ship: EMA UNet and text encoder, the trained VAE with its ``scaling_factor``."""
    vae = copy.deepcopy(state.pipe.vae).eval()
    vae.register_to_config(scaling_factor=state.scaling_factor)
    return with_parts(state.pipe, vae=vae, text_encoder=state.ema_text, unet=state.ema_unet)


def grid_prompts(views: ViewScheme) -> list[str]:
    """The prompts of :data:`GRID_VIEWS` in ``views``' words."""
    return [views.caption(text, elevation, azimuth, 3.0) for text, elevation, azimuth in GRID_VIEWS]


def _write_grid(state: _State, cfg: PriorTrainConfig, views: ViewScheme, path: Path) -> None:
    prompts = [p for _ in range(2) for p in grid_prompts(views)]  # one column per prompt
    images = sample_images(_export_pipeline(state), prompts, cfg.sample_steps, cfg.guidance_scale, cfg.seed)
    save_png(image_grid(images, cols=len(GRID_VIEWS)), path)


def train_prior(
    cfg: PriorTrainConfig, dataset: str | Path, out: str | Path, export: str | Path | None = None, progress: bool = True
) -> PriorTrainResult:
    """Train (or resume) the embedded prior in ``out`` and save the pipeline to ``export`` (``out/pipeline``)."""
    data = load_shapes_dataset(dataset)
    if data.images.shape[1] % 2:
        raise UsageError(f"image size must be even (the VAE halves it), got {data.images.shape[1]}")
    out = Path(out)
    export = Path(export) if export is not None else out / "pipeline"
    views = data.config.view_scheme
    dataset_id = {"n": len(data), "size": int(data.images.shape[1]), "seed": data.config.seed}
    if views.name != "coarse":  # checkpoints of coarse datasets predate the setting
        dataset_id["views"] = views.name
    state = _new_state(cfg, dataset_id["size"])
    ckpt = out / CHECKPOINT
    if ckpt.exists():
        _load_checkpoint(state, cfg, dataset_id, ckpt)
    out.mkdir(parents=True, exist_ok=True)
    save_json(out / "config.json", {"train": asdict(cfg), "dataset": {"path": str(dataset), **dataset_id}})
    images, alpha = _images(data)
    tokens, item_rows = _token_table(state.pipe, data.captions)
    latents: Tensor | None = None
    losses = {"vae": math.nan, "diffusion": math.nan}
    started = time.perf_counter() - state.seconds
    bar = tqdm(total=cfg.total_steps, initial=state.step, desc="train-prior", unit="step", disable=not progress)
    for step in range(state.step, cfg.total_steps):
        if step < cfg.vae_steps:
            phase, loss = "vae", _vae_step(state, cfg, images, alpha)
            lr = cfg.vae_lr
        else:
            if latents is None:
                latents = _cache_latents(state.pipe.vae, images)
                if cfg.init_from is None:
                    state.scaling_factor = float(1 / latents.std())
                if step == cfg.vae_steps and cfg.init_from is None:
                    _write_vae_grid(state, images, out / "samples" / "vae_reconstructions.png")
            phase = "diffusion"
            loss = _diffusion_step(state, cfg, latents, item_rows, tokens, step - cfg.vae_steps)
            lr = _lr_at(step - cfg.vae_steps, cfg)
        losses[phase] = loss
        state.step = step + 1
        state.seconds = time.perf_counter() - started
        if state.step % cfg.log_every == 0 or state.step == cfg.total_steps:
            state.rows.append(
                {"step": state.step, "phase": phase, "loss": f"{loss:.6f}", "lr": lr, "seconds": f"{state.seconds:.1f}"}
            )
            _write_metrics(state.rows, out / "metrics.csv")
        bar.update(1)
        bar.set_postfix(phase=phase, loss=f"{loss:.4f}")
        if phase == "diffusion" and (step + 1 - cfg.vae_steps) % cfg.sample_every == 0:
            _write_grid(state, cfg, views, out / "samples" / f"step_{state.step:07d}.png")
        if state.step % cfg.checkpoint_every == 0 or state.step == cfg.total_steps:
            _save_checkpoint(state, cfg, dataset_id, ckpt)
    bar.close()
    logged = _last_losses(state.rows)  # a phase this invocation did not reach (resumed past it): its last logged loss
    losses = {phase: value if math.isfinite(value) else logged[phase] for phase, value in losses.items()}
    final = _export_pipeline(state)
    save_pipeline(final, export, views)
    _write_grid(state, cfg, views, out / "samples" / "final.png")
    return PriorTrainResult(out, export, losses["vae"], losses["diffusion"], state.seconds)


def _last_losses(rows: list[dict[str, float | int | str]]) -> dict[str, float]:
    """The last logged loss of each phase (NaN for a phase never logged)."""
    last = {"vae": math.nan, "diffusion": math.nan}
    for row in rows:
        last[str(row["phase"])] = float(row["loss"])
    return last


@torch.no_grad()
def _write_vae_grid(state: _State, images: Tensor, path: Path) -> None:
    """Originals (top row) over VAE reconstructions (bottom row) of 16 dataset images."""
    x = images[:16]
    recon = state.pipe.vae.decode(state.pipe.vae.encode(x).latent_dist.mean).sample
    save_png(image_grid(torch.cat([x, recon]).add(1).div(2).clamp(0, 1), cols=16), path)
