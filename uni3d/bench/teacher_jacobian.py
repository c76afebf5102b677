"""``uni3d bench teacher-jacobian``: how much of a 3D ``uni-*`` gradient goes through the guided teacher?

The expanded form (METHOD.md section 4) is differentiated through both denoisers on the live ``x_t``. In 3D the
teacher ``D_q`` is the prior with classifier-free guidance (7.5 by default), which is not the denoiser of any
distribution. Per draw, on the run's current field, this benchmark takes the preset's generator loss and its
gradient w.r.t. the latent ``x0`` twice: exact (teacher live) and without the teacher's Jacobian (teacher
detached, ``GenerateConfig.teacher_jacobian = False``, the 3D default). It reports the norm ratio of the two and
the cosine of each with the distillation direction ``D_p - D_q`` (the integral form's, VSD's). The run itself
trains with the config's ``teacher_jacobian``; the draws use their own seed (:mod:`uni3d.bench.draws`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from uni3d.bench.common import machine, replace_section, section_markers
from uni3d.bench.draws import fresh_draws, measure_run
from uni3d.cli.commands import BENCHMARKS
from uni3d.errors import UsageError
from uni3d.io import save_json
from uni3d.losses import DenoiserOutputs, generator_loss, get_preset
from uni3d.models.frozen import frozen
from uni3d.tasks.text_to_3d.config import GenerateConfig

if TYPE_CHECKING:  # the trainer imports diffusers and peft: only when the benchmark runs
    from uni3d.tasks.text_to_3d.trainer import TextTo3D

BEGIN, END = section_markers("teacher-jacobian")


def _cos(a: Tensor, b: Tensor) -> float:
    a, b = a.flatten(), b.flatten()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-30))


def jacobian_split(trainer: TextTo3D, draws: int, seed: int = 1000) -> list[dict[str, float]]:
    """Per draw: ``sigma``, ``|g_exact| / |g_without|`` and ``cos(g, D_p - D_q)`` of both (``g = dL/dx0``)."""
    prior, c, preset = trainer.prior, trainer.cfg, trainer.preset
    rows = []
    for d in fresh_draws(trainer, draws, seed):
        x0 = d.x0.detach().requires_grad_(True)
        x_t = d.noised(x0)
        assert trainer.fake is not None
        with frozen(trainer.fake):
            d_fake = trainer.fake_denoise(x_t, d.sigma, d.cond, d.uncond, d.c2w)
        features = trainer.fake.mid_features
        ratio = None
        if trainer.head is not None and features is not None:
            ratio = trainer.ratio_estimate(features, d.sigma)
        d_real = prior.denoise(x_t, d.sigma, d.cond, d.uncond, c.guidance_scale)
        grads = []
        for teacher in (d_real, d_real.detach()):
            outputs = DenoiserOutputs(x0=x0, x_t=x_t, sigma=d.sigma, d_real=teacher, d_fake=d_fake, ratio=ratio)
            loss = generator_loss(preset, outputs)
            grads.append(torch.autograd.grad(loss.sum(), x0, retain_graph=True)[0])
        exact, without = grads
        direction = (d_fake - d_real).detach()
        rows.append(
            {
                "sigma": float(d.sigma),
                "norm_ratio": float(exact.norm() / without.norm().clamp_min(1e-30)),
                "cos_exact": _cos(exact, direction),
                "cos_without": _cos(without, direction),
            }
        )
    return rows


def measure(cfg: GenerateConfig, every: int, draws: int, prior: Any = None) -> list[dict[str, Any]]:
    """Train ``cfg``; :func:`jacobian_split` at step 0, every ``every`` and at the end (medians and extremes)."""

    def split(trainer: TextTo3D) -> dict[str, Any]:
        per_draw = jacobian_split(trainer, draws)
        col = {k: [r[k] for r in per_draw] for k in per_draw[0]}
        return {
            "norm_ratio_median": statistics.median(col["norm_ratio"]),
            "norm_ratio_max": max(col["norm_ratio"]),
            "cos_exact_median": statistics.median(col["cos_exact"]),
            "cos_exact_min": min(col["cos_exact"]),
            "cos_without_median": statistics.median(col["cos_without"]),
            "cos_without_min": min(col["cos_without"]),
            "draws": per_draw,
        }

    return measure_run(cfg, every, split, prior)


def _section(config: dict[str, Any], rows: list[dict[str, Any]], info: dict[str, Any], command: str) -> str:
    lines = [
        BEGIN,
        "## The guided teacher's Jacobian in the 3D gradient (`uni3d bench teacher-jacobian`)",
        "",
        f"`{command}` on {info['cpu']} ({info['cores']} cores), torch {info['torch']}, {info['date']}. Prompt "
        f'"{config["prompt"]}", preset `{config["preset"]}`, guidance {config["guidance_scale"]:g}, the run trained '
        f"with teacher_jacobian={config['teacher_jacobian']}. Per step, over {len(rows[0]['draws'])} draws (their own "
        "seed): the norm of the exact gradient w.r.t. the latent over that without the teacher's Jacobian, and the "
        "cosine of each with `D_p - D_q` (median, and the worst draw). Numbers per draw: "
        "`docs/benchmarks/teacher_jacobian.json`.",
        "",
        "| step | norm exact / without (median, max) | cos exact (median, min) | cos without (median, min) |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['step']} | {r['norm_ratio_median']:.2f}, {r['norm_ratio_max']:.2f} | "
            f"{r['cos_exact_median']:+.2f}, {r['cos_exact_min']:+.2f} | "
            f"{r['cos_without_median']:+.2f}, {r['cos_without_min']:+.2f} |"
        )
    return "\n".join([*lines, END])


def add_commands(bench_subparsers: argparse._SubParsersAction) -> None:
    """Register ``teacher-jacobian`` on the ``uni3d bench`` subparsers."""
    p = bench_subparsers.add_parser("teacher-jacobian", help=BENCHMARKS["teacher-jacobian"].help)
    p.add_argument("--prompt", default="a brown cone")
    p.add_argument("--preset", default="uni-rkl", help="an expanded (uni-<f>) or SiD preset (default uni-rkl)")
    p.add_argument("--steps", type=int, default=100, help="training steps (default 100)")
    p.add_argument("--every", type=int, default=50, help="measure every N steps (default 50)")
    p.add_argument("--draws", type=int, default=8, help="draws per measurement (default 8)")
    p.add_argument("--docs", type=Path, default=Path("docs"), help="docs folder to write into (default docs)")
    p.set_defaults(func=_bench_teacher_jacobian)


def _bench_teacher_jacobian(args: argparse.Namespace) -> int:
    if not get_preset(args.preset).needs_input_grad:
        raise UsageError(f"preset {args.preset!r} never differentiates the teacher; use uni-<f>, sid or sim")
    if args.every < 1 or args.draws < 1 or args.steps < 0:
        raise UsageError("--every and --draws must be at least 1, --steps at least 0")
    cfg = GenerateConfig(prompt=args.prompt, preset=args.preset, steps=args.steps)
    rows = measure(cfg, args.every, args.draws)
    for r in rows:
        print(
            f"step {r['step']}: |exact|/|without| {r['norm_ratio_median']:.2f}, cos exact {r['cos_exact_median']:+.2f}, "
            f"cos without {r['cos_without_median']:+.2f}"
        )
    info = machine()
    command = "uni3d " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    out = args.docs / "benchmarks" / "teacher_jacobian.json"
    save_json(out, {"machine": info, "command": command, "config": cfg.as_dict(), "rows": rows})
    replace_section(args.docs / "benchmarks.md", _section(cfg.as_dict(), rows, info, command))
    print(json.dumps({"written": str(out)}))
    return 0
