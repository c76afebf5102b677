"""``uni3d bench sd-step``: the text-to-3D step at Stable Diffusion size against the bare cost of its UNet calls.

Issue 5's GPU benchmark, runnable anywhere. Per architecture (:mod:`uni3d.models.sd_architectures`: SD 1.5- and
2.1-shaped models with random weights, no download; ``tiny`` is the test prior) and preset, a :class:`TextTo3D`
with the default settings (``GenerateConfig.resolved``: a 128-pixel render upsampled to the prior's side) runs
``warmup`` untimed steps, then ``steps`` timed ones (:meth:`TextTo3D.train_step`, CUDA synchronised; the median
is reported). The **bare** cost is what the step cannot do without at the same batch: the teacher's
classifier-free-guided UNet forward (``2 x views`` images, no grad) and, for presets with a learned fake score,
the LoRA UNet's forward + backward (its denoising step). The rest of a step (render, VAE encoder forward and
backward, the generator loss's LoRA forward, regularizers, ratio head, optimizer steps) is the **overhead**,
``step / bare``. Peak memory: ``torch.cuda.max_memory_allocated`` over the timed steps on CUDA; on CPU, the
process's peak resident set size (models included). ``--latent-stage`` times the step of the latent first stage
(``latent_until``: colour rendered at the latent side and mapped to latents by the prior's fitted affine map, no
VAE encoder). Writes ``docs/benchmarks/sd_step.json`` and the section between ``<!-- sd-step:begin -->`` and
``<!-- sd-step:end -->`` of ``docs/benchmarks.md``; rows of another model, preset, dtype, memory options, device or
stage measured earlier are kept, each with its own command, date and machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from uni3d.bench.common import machine, replace_section, section_markers
from uni3d.cli.commands import BENCHMARKS
from uni3d.devices import resolve_device
from uni3d.engine import STAGE
from uni3d.errors import UsageError
from uni3d.io import save_json
from uni3d.models.prior_source import PRIOR_DTYPES
from uni3d.models.sd_architectures import ARCHITECTURES
from uni3d.scene.cameras import orbit_cameras
from uni3d.tasks.text_to_3d.config import MEMORY_OPTIONS, GenerateConfig

if TYPE_CHECKING:  # diffusers and peft are imported when the benchmark runs, not with the CLI
    from uni3d.models.stable_diffusion import PriorOptions, StableDiffusionPrior
    from uni3d.tasks.text_to_3d.trainer import TextTo3D

BEGIN, END = section_markers("sd-step")
MODELS = ("tiny", *ARCHITECTURES)
PROMPT = "a hamburger"


def add_commands(bench_subparsers: argparse._SubParsersAction) -> None:
    """Register ``sd-step`` on the ``uni3d bench`` subparsers."""
    p = bench_subparsers.add_parser("sd-step", help=BENCHMARKS["sd-step"].help)
    p.add_argument("--models", default="sd15,sd21", help=f"comma-separated, of {', '.join(MODELS)} (default sd15,sd21)")
    p.add_argument("--presets", default="sds,vsd,uni-jeffreys", help="comma-separated (default sds,vsd,uni-jeffreys)")
    p.add_argument("--device", default="auto", help="auto (cuda when available) | cuda | cpu")
    p.add_argument("--dtype", choices=PRIOR_DTYPES, default=None, help="default fp16 on cuda, else fp32")
    p.add_argument("--steps", type=int, default=10, help="timed steps per case (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    for name in MEMORY_OPTIONS:
        p.add_argument("--" + name.replace("_", "-"), dest=name, action="store_true", help=f"prior memory: {name}")
    p.add_argument("--profile", action="store_true", help="one more step per case under torch.profiler: per stage")
    p.add_argument(
        "--latent-stage",
        action="store_true",
        help="time the latent first stage's step (rendered straight into latent space, no VAE encoder)",
    )
    p.add_argument(
        "--encode-size",
        type=int,
        default=None,
        help="the side the VAE encoder sees (the encode_size setting; default the prior's image side)",
    )
    p.add_argument("--docs", type=Path, default=Path("docs"), help="docs folder to write into (default docs)")
    p.set_defaults(func=_bench_sd_step)


def build_prior(model: str, options: PriorOptions) -> StableDiffusionPrior:
    """A random-weight prior of ``model`` (:data:`MODELS`)."""
    from uni3d.models.sd_architectures import random_sd_prior
    from uni3d.models.stable_diffusion import StableDiffusionPrior
    from uni3d.models.tiny_sd import tiny_pipeline

    if model == "tiny":
        pipe = tiny_pipeline(sample_size=16)
        parts = (pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.unet, pipe.scheduler)
        return StableDiffusionPrior.from_modules(*parts, options)
    return random_sd_prior(model, options)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], object], warmup: int, repeats: int, device: str) -> float:
    """Median wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones (CUDA synchronised)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bare_call(trainer: TextTo3D) -> Callable[[], None]:
    """One call of the step's unavoidable UNet work at its batch: the guided teacher forward (no grad) and, with
    a learned fake score, the LoRA forward + backward (gradients cleared after)."""
    from uni3d.models.lora_fake_score import camera_condition

    prior, cfg, device = trainer.prior, trainer.cfg, trainer.device
    unet = prior.unet.config
    n = cfg.views_per_step
    x = torch.randn(n, int(unet.in_channels), int(unet.sample_size), int(unet.sample_size), device=device)
    sigma = prior.sigma_at(torch.full((n,), 0.5 * prior.num_train_timesteps, device=device))
    front = orbit_cameras(1, elevation_deg=0.0)[torch.zeros(n, dtype=torch.long)]  # n front views
    cond, uncond = prior.view_conditions(cfg.prompt, front, cfg.negative_prompt, cfg.view_dependent)
    camera = camera_condition(torch.eye(4, device=device).expand(n, 4, 4))

    def call() -> None:
        with torch.no_grad():
            prior.denoise(x, sigma, cond, uncond, cfg.guidance_scale)
        if trainer.fake is not None:
            trainer.fake.denoise(x, sigma, cond, camera).square().mean().backward()
            trainer.fake.zero_grad(set_to_none=True)

    return call


STAGE_COLUMNS: dict[str, tuple[str, ...]] = {
    "render": ("render",),
    "VAE encode": ("vae_encode",),
    "teacher UNet": ("teacher",),
    "fake UNet": ("fake",),
    "generator backward": ("backward.loss_generator",),
    "fake-score update": ("fake_score_loss", "backward.loss_fake"),
    "ratio head": ("ratio_head", "ratio_loss", "backward.loss_ratio"),
    "optimizers": ("optimizer.loss_generator", "optimizer.loss_fake", "optimizer.loss_ratio"),
}
"""The breakdown's columns: the step's named stages (:data:`uni3d.engine.STAGE`) they add up."""


def stage_seconds(step: Callable[[], object], device: str) -> tuple[float, dict[str, float]]:
    """One ``step()`` under ``torch.profiler``: its wall seconds and the seconds of each named stage (CPU time of
    the stage's range; on CUDA the device time of its kernels)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        step()
        _sync(device)
        wall = time.perf_counter() - start
    stages: dict[str, float] = {}
    for event in prof.events():
        if event.name.startswith(STAGE):
            micro = getattr(event, "device_time_total", 0) if cuda else event.cpu_time_total
            name = event.name.removeprefix(STAGE)
            stages[name] = stages.get(name, 0.0) + micro / 1e6
    return wall, stages


def breakdown(wall: float, stages: dict[str, float]) -> dict[str, float]:
    """Seconds per :data:`STAGE_COLUMNS` column, and ``other``: the rest of the step (cameras, text embeddings,
    noise, the loss's arithmetic, regularizers, checks)."""
    columns = {name: sum(stages.get(stage, 0.0) for stage in parts) for name, parts in STAGE_COLUMNS.items()}
    return {**columns, "other": max(0.0, wall - sum(columns.values()))}


def _peak_memory_gib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def measure(
    prior: StableDiffusionPrior,
    model: str,
    preset: str,
    steps: int,
    warmup: int,
    memory: str = "",
    *,
    profile: bool = False,
    latent_stage: bool = False,
    encode_size: int | None = None,
) -> dict[str, Any]:
    """One row: median step and bare seconds, their ratio, peak memory and the run's shapes; with ``profile``, one
    more step under the profiler gives the seconds of each stage (:func:`breakdown`); with ``latent_stage``, the
    steps are the latent first stage's; with ``encode_size``, the VAE encodes at that side."""
    from uni3d.tasks.text_to_3d.trainer import TextTo3D, prior_image_size

    device = str(prior.log_sigmas.device)
    total = warmup + steps + (1 if profile else 0)  # the profiled step is one of the run's, in its stage
    cfg = GenerateConfig(
        prompt=PROMPT,
        preset=preset,
        steps=total,
        latent_until=1.0 if latent_stage else 0.0,
        encode_size=encode_size,
    ).resolved(prior_image_size(prior))
    torch.manual_seed(0)
    trainer = TextTo3D(cfg, prior)
    bare = median_seconds(bare_call(trainer), warmup, steps, device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    step = median_seconds(trainer.train_step, warmup, steps, device)
    peak = _peak_memory_gib(device)
    stages = breakdown(*stage_seconds(trainer.train_step, device)) if profile else None
    unet = prior.unet.config
    return {
        "model": model,
        "preset": preset,
        "dtype": str(prior.unet.dtype).removeprefix("torch."),
        "memory": memory,
        "device": device,
        "latent": int(unet.sample_size),
        "image": prior_image_size(prior),
        "render": int(unet.sample_size) if latent_stage else cfg.render_size,
        "stage": "latent" if latent_stage else "rgb",
        "encode": None if latent_stage else trainer.encode_size,
        "views": cfg.views_per_step,
        "unet_params_m": round(sum(p.numel() for p in prior.unet.parameters()) / 1e6, 1),
        "step_s": step,
        "bare_s": bare,
        "overhead": step / bare,
        "peak_gib": peak,
        **({"stages_s": stages} if stages is not None else {}),
        "rollbacks": trainer.counters.rollbacks,
        "steps": steps,
        "warmup": warmup,
    }


def run(
    models: list[str],
    presets: list[str],
    options: PriorOptions,
    steps: int,
    warmup: int,
    *,
    profile: bool = False,
    latent_stage: bool = False,
    encode_size: int | None = None,
) -> list[dict[str, Any]]:
    """Every (model, preset) row with the prior ``options`` (a resolved device); each model is built once. Names
    and counts are checked before any model is built (a full-size one takes a while)."""
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise UsageError(f"unknown model {unknown[0]!r}; valid: {', '.join(MODELS)}")
    if steps < 1 or warmup < 0:
        raise UsageError("--steps must be at least 1 and --warmup at least 0")
    for preset in presets:
        GenerateConfig(prompt=PROMPT, preset=preset)  # one-line error for an unknown preset
    if not options.device.startswith("cuda") and any(m != "tiny" for m in models):
        print(
            f"note: full-size models on {options.device}: each step takes minutes on a CPU; "
            f"{len(models) * len(presets) * (steps + warmup)} training steps and as many bare UNet calls "
            "are planned",
            file=sys.stderr,
            flush=True,
        )
    memory = ", ".join(name.replace("_", " ") for name in MEMORY_OPTIONS if getattr(options, name))
    rows = []
    for model in models:
        prior = build_prior(model, options)
        for preset in presets:
            rows.append(
                measure(
                    prior,
                    model,
                    preset,
                    steps,
                    warmup,
                    memory,
                    profile=profile,
                    latent_stage=latent_stage,
                    encode_size=encode_size,
                )
            )
            print(_row(rows[-1]), flush=True)
        del prior
        if options.device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


def _row(r: dict[str, Any]) -> str:
    return (
        f"| {r['model']} | `{r['preset']}` | {r['dtype']} | {r['memory'] or '-'} | {r.get('stage', 'rgb')} "
        f"| {r['latent']}² ({r['image']} px; render {r['render']}{_encode(r)}) "
        f"| {r['unet_params_m']:.0f} M | {1000 * r['step_s']:.0f} | {1000 * r['bare_s']:.0f} | {r['overhead']:.2f}x "
        f"| {r['peak_gib']:.1f} | {r['rollbacks']} |"
    )


def _encode(row: dict[str, Any]) -> str:
    """``, encode N`` for a row whose VAE encoded below the prior's image side, else nothing."""
    side = row.get("encode")
    return f", encode {side}" if side is not None and side != row["image"] else ""


def section(rows: list[dict[str, Any]], info: dict[str, Any], command: str) -> str:
    """The docs section: the latest command and machine, the earlier commands whose rows are kept, and one table row
    per (model, preset, stage, ...)."""
    earlier = sorted({(r["command"], r["date"]) for r in rows if r.get("command", command) != command})
    where = info["cuda"] or f"{info['cpu']} ({info['cores']} cores, {info['torch_threads']} torch threads)"
    memory = "`torch.cuda.max_memory_allocated` over the timed steps" if info["cuda"] else "peak RSS of the process"
    lines = [
        BEGIN,
        "## Text-to-3D step at Stable Diffusion size",
        "",
        f"`{command}` on {where}, torch {info['torch']}, {info['date']} (load average {info['load_average_1min']}). "
        "Random-weight models with the released architectures (`uni3d/prior/architectures.py`); the default "
        "`GenerateConfig` otherwise. Step: median of the timed `TextTo3D.train_step` calls after the warm-up. "
        "Bare: the teacher's guided UNet forward (no grad) plus, for presets with a LoRA fake score, the LoRA "
        f"UNet's forward + backward, at the same batch. Peak memory: {memory} (a CPU row's includes everything "
        "the process did before, such as fitting the latent map). Stage: `rgb`, the default step (render, upsample, "
        "VAE encoder); `latent`, the latent first stage's (`--latent-stage`: colour rendered at the latent side, "
        "mapped by the prior's fitted affine map, no encoder); `encode N`: the VAE encoded at side N "
        "(`--encode-size`, the `encode_size` setting), the latents resized to the UNet's side. Raw numbers: "
        "`docs/benchmarks/sd_step.json`.",
        "",
        *[f"- Earlier rows, kept: `{c}` ({d})." for c, d in earlier],
        *([""] if earlier else []),
        "| model | preset | dtype | memory options | stage | latent | UNet | step ms | bare ms | step / bare "
        "| peak GiB | rollbacks |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *(_row(r) for r in rows),
        *_breakdown_table([r for r in rows if "stages_s" in r]),
        END,
    ]
    return "\n".join(lines)


def _breakdown_table(rows: list[dict[str, Any]]) -> list[str]:
    """Where one profiled step goes: seconds and share of the step per stage (``--profile``)."""
    if not rows:
        return []
    names = [*STAGE_COLUMNS, "other"]
    cells = []
    for r in rows:
        total = sum(r["stages_s"].values()) or 1.0
        shares = " | ".join(f"{r['stages_s'][n]:.2f} ({100 * r['stages_s'][n] / total:.0f}%)" for n in names)
        cells.append(
            f"| {r['model']} | `{r['preset']}` ({r.get('stage', 'rgb')}{_encode(r)}) | {total:.2f} | {shares} |"
        )
    return [
        "",
        "Where one step goes (`--profile`: one more step under `torch.profiler`; seconds and share of that step per "
        "named stage, `uni3d.engine.STAGE`; generator backward is the render's, the VAE encoder's and, for presets "
        "that differentiate it, the fake UNet's backward; other: cameras, text embeddings, noise, loss arithmetic, "
        "regularizers):",
        "",
        "| model | preset | step s | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
        *cells,
    ]


def _key(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(
        str(row.get(k, "rgb" if k == "stage" else ""))
        for k in ("model", "preset", "dtype", "memory", "device", "stage")
    ) + (_encode(row),)


def merge_rows(earlier: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` and the rows of the ``earlier`` file (its command, date and machine added to rows saved without them)
    whose model, preset, dtype, memory options, device and stage were not measured again, in the earlier order
    first."""
    fresh = {_key(r) for r in rows}
    saved_on = earlier.get("machine", {})
    legacy = {"command": earlier.get("command", ""), "date": saved_on.get("date", ""), "machine": saved_on}
    kept = [{**legacy, **r} for r in earlier.get("rows", []) if _key(r) not in fresh]
    return kept + rows


def _bench_sd_step(args: argparse.Namespace) -> int:
    from uni3d.models.stable_diffusion import PriorOptions

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    device = str(resolve_device(args.device))
    dtype = args.dtype or ("fp16" if device.startswith("cuda") else "fp32")
    memory = {name: bool(getattr(args, name)) for name in MEMORY_OPTIONS}
    path = args.docs / "benchmarks" / "sd_step.json"
    try:
        earlier = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read {path} ({err}); move it away to start a new table") from err
    options = PriorOptions(dtype, device, **memory)
    rows = run(
        models,
        presets,
        options,
        args.steps,
        args.warmup,
        profile=args.profile,
        latent_stage=args.latent_stage,
        encode_size=args.encode_size,
    )
    switches = "".join(f" --{name.replace('_', '-')}" for name, on in memory.items() if on)
    switches += " --profile" if args.profile else ""
    switches += " --latent-stage" if args.latent_stage else ""
    switches += f" --encode-size {args.encode_size}" if args.encode_size is not None else ""
    command = (
        f"uni3d bench sd-step --models {','.join(models)} --presets {','.join(presets)} --device {device} "
        f"--dtype {dtype} --steps {args.steps} --warmup {args.warmup}{switches}"
    )
    info = machine()
    rows = merge_rows(earlier, [{**r, "command": command, "date": info["date"], "machine": info} for r in rows])
    save_json(path, {"machine": info, "command": command, "rows": rows})
    replace_section(args.docs / "benchmarks.md", section(rows, info, command))
    print(f"wrote {args.docs / 'benchmarks.md'} and {args.docs / 'benchmarks' / 'sd_step.json'}")
    return 0
