"""``uni3d bench fake-bias``: is the fake score's residual aligned with the score difference during text to 3D?

The expanded form's ratio-motion term ``sg(-2 r h'(r) inner y) . x_t`` with ``inner = y . (c - s_p)``,
``y = (D_p - D_q) / sigma^2`` and ``c - s_p = (x0 - D_p) / sigma^2`` (METHOD.md section 4) averages out only
when ``D_p`` is the exact posterior mean of the renders, ``E[x0 - D_p | x_t] = 0``. A LoRA fake score lags behind
the field; if its residual ``x0 - D_p`` points along ``y``, ``inner > 0`` on most draws and the term pushes every
render along ``-y``: away from the teacher. This benchmark trains one run and, every ``--every`` steps, draws
``--draws`` (camera, ``t``, noise) on the current field and reports ``cos(y, x0 - D_p)``: its mean and the share
of positive draws (1/2 for no systematic sign). The draws use their own seed and leave the run's RNG untouched.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from uni3d.bench.common import machine, replace_section, section_markers
from uni3d.bench.draws import fresh_draws, measure_run
from uni3d.cli.commands import BENCHMARKS
from uni3d.config import read_config_file
from uni3d.errors import UsageError
from uni3d.io import save_json
from uni3d.tasks.text_to_3d.config import GenerateConfig
from uni3d.tasks.text_to_3d.distillers import get_distiller, loss_preset

if TYPE_CHECKING:  # the trainer imports diffusers and peft: only when the benchmark runs
    from uni3d.tasks.text_to_3d.trainer import TextTo3D

BEGIN, END = section_markers("fake-bias")


@torch.no_grad()
def residual_alignment(trainer: TextTo3D, draws: int, seed: int = 1000) -> list[float]:
    """``cos(y, x0 - D_p)`` on ``draws`` fresh (camera, ``t``, noise) draws of the trainer's current state."""
    prior, c = trainer.prior, trainer.cfg
    values = []
    for d in fresh_draws(trainer, draws, seed):
        x_t = d.noised()
        d_real = prior.denoise(x_t, d.sigma, d.cond, d.uncond, c.guidance_scale)
        d_fake = trainer.fake_denoise(x_t, d.sigma, d.cond, d.uncond, d.c2w)
        y, residual = (d_fake - d_real).flatten(), (d.x0 - d_fake).flatten()
        values.append(float(y @ residual / (y.norm() * residual.norm()).clamp_min(1e-12)))
    return values


def measure(cfg: GenerateConfig, every: int, draws: int, prior: Any = None) -> list[dict[str, Any]]:
    """Train ``cfg`` for ``cfg.steps`` steps, measuring :func:`residual_alignment` at step 0 and every ``every``."""

    def alignment(trainer: TextTo3D) -> dict[str, float]:
        cos = torch.tensor(residual_alignment(trainer, draws))
        return {"cos_mean": cos.mean().item(), "positive": (cos > 0).float().mean().item()}

    return measure_run(cfg, every, alignment, prior)


def _section(results: list[dict[str, Any]], info: dict[str, Any], command: str) -> str:
    lines = [
        BEGIN,
        "## Fake-score residual against the score difference (`uni3d bench fake-bias`)",
        "",
        f"`{command}` on {info['cpu']} ({info['cores']} cores), torch {info['torch']}, {info['date']}. Per run and "
        "step: the mean of `cos(y, x0 - D_p)` over the draws and the share of draws where it is positive (1/2: no "
        "systematic sign; near 1: the ratio-motion term of the expanded form pushes renders away from the teacher). "
        "Numbers: `docs/benchmarks/fake_bias.json`.",
        "",
        "| prompt | preset | guidance | fake-score guidance | warm-up | particles | noise | step | mean cos | positive |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        c = res["config"]
        for r in res["rows"]:
            lines.append(
                f"| {c['prompt']} | {c['preset']} | {c['guidance_scale']:g} | {c['fake_guidance_scale']:g} | "
                f"{c['fake_warmup_steps']} | {c.get('particles', 1)} | {c.get('noise') or 'fresh'} | {r['step']} | "
                f"{r['cos_mean']:+.3f} | {r['positive']:.0%} |"
            )
    return "\n".join([*lines, END])


def add_commands(bench_subparsers: argparse._SubParsersAction) -> None:
    """Register ``fake-bias`` on the ``uni3d bench`` subparsers."""
    p = bench_subparsers.add_parser("fake-bias", help=BENCHMARKS["fake-bias"].help)
    p.add_argument("--prompt", default="a red cube")
    p.add_argument("--preset", default="uni-jeffreys")
    p.add_argument("--steps", type=int, default=200, help="training steps per run (default 200)")
    p.add_argument("--every", type=int, default=50, help="measure every N steps (default 50)")
    p.add_argument("--draws", type=int, default=24, help="draws per measurement (default 24)")
    p.add_argument(
        "--fake-guidance-scales", default="1,7.5", help="comma-separated fake-score guidance scales, one run each"
    )
    p.add_argument("--fake-warmup-steps", type=int, default=0)
    p.add_argument("--particles", default="1", help="comma-separated particle counts, one run each (default 1)")
    p.add_argument("--config", type=Path, default=None, help="YAML/JSON generate settings for every run")
    p.add_argument("--docs", type=Path, default=Path("docs"), help="docs folder to write into (default docs)")
    p.set_defaults(func=_bench_fake_bias)


def _bench_fake_bias(args: argparse.Namespace) -> int:
    settings: dict[str, Any] = read_config_file(args.config, "generate") if args.config else {}
    base = GenerateConfig.from_dict({**settings, "prompt": args.prompt, "preset": args.preset, "steps": args.steps})
    counts = [int(k) for k in args.particles.split(",") if k.strip()]
    if get_distiller(args.preset) is not None or loss_preset(args.preset).fake_score != "learned":
        raise UsageError(f"preset {args.preset!r} has no fake score to measure; use vsd, uni-<f> or fdistill-<f>")
    if args.every < 1 or args.draws < 1 or not counts or min(counts) < 1:
        raise UsageError("--every, --draws and every --particles count must be at least 1")
    results = []
    scales = [float(s) for s in args.fake_guidance_scales.split(",") if s.strip()]
    for scale, k in itertools.product(scales, counts):
        cfg = dataclasses.replace(  # the LoRA's lag is what is measured, with any particle count
            base,
            fake_guidance_scale=scale,
            fake_warmup_steps=args.fake_warmup_steps,
            particles=k,
            fake_estimator="lora",
        )
        rows = measure(cfg, args.every, args.draws)
        for r in rows:
            print(
                f"fake guidance {scale:g}, {k} particles, step {r['step']}: mean cos {r['cos_mean']:+.3f}, "
                f"positive {r['positive']:.0%}"
            )
        saved = {**cfg.as_dict(), "noise": cfg.resolved_noise(), "t_schedule": cfg.resolved_t_schedule()}
        results.append({"config": saved, "rows": rows})
    info = machine()
    command = "uni3d " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    save_json(args.docs / "benchmarks" / "fake_bias.json", {"machine": info, "command": command, "results": results})
    replace_section(args.docs / "benchmarks.md", _section(results, info, command))
    print(json.dumps({"written": str(args.docs / "benchmarks" / "fake_bias.json")}))
    return 0
