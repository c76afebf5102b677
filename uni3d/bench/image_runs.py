"""``uni3d bench images-runs``: long ``uni3d distill`` runs against the teacher at NFE 35, within a CPU budget.

``uni3d bench images`` trains every student itself for a short, equal budget. Long runs (the issue's 30 minutes
of 2 cores = 3,600 CPU seconds) are better made with ``uni3d distill`` (checkpoints, resume, curves), and this
command reads their folders: ``config.json`` and ``metrics.csv`` (FID of the EMA generator every
``eval_every`` steps, with the training CPU seconds spent so far). It scores the teacher's Heun sampler at
``--nfe`` on the runs' own evaluation noise and labels (the runs must share ``eval_samples``, ``eval_seed``
and the feature net), then reports per run the FID at the **last** evaluation within the budget (the
verdict uses it, not the best evaluation, which would be a selection on the test set), the best one for
reference, steps, CPU seconds, skipped steps. Writes ``docs/benchmarks/images_runs.json``, the curves plot
``docs/benchmarks/images_runs.png``, each run's last sample grid under ``docs/benchmarks/images_runs/``, and
the ``images-runs`` section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from uni3d.bench.common import machine, replace_section, section_markers
from uni3d.bench.images import teacher_row
from uni3d.cli.commands import BENCHMARKS
from uni3d.errors import UsageError
from uni3d.io import save_json
from uni3d.tasks.images.curves import fid_curves_png
from uni3d.tasks.images.data import load_dataset
from uni3d.tasks.images.distill_config import DistillConfig
from uni3d.tasks.images.distill_run import load_teacher, make_evaluator

BEGIN, END = section_markers("images-runs")
SHOWN_SETTINGS = ("lr_generator", "gen_sigma_min", "ratio_clamp", "warmup_steps", "batch_size")


def read_run(folder: Path) -> tuple[DistillConfig, list[dict[str, Any]]]:
    """A distill run folder's config and metrics rows (one-line error when it is not one)."""
    try:
        cfg = DistillConfig.from_dict(json.loads((folder / "config.json").read_text()))
        with open(folder / "metrics.csv") as fh:
            rows = [{k: _number(v) for k, v in r.items()} for r in csv.DictReader(fh)]
    except (OSError, ValueError) as err:
        raise UsageError(f"{folder} is not a uni3d distill run folder (config.json + metrics.csv): {err}") from None
    return cfg, rows


def _number(text: str) -> float | str | None:
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def summarize(name: str, cfg: DistillConfig, rows: list[dict[str, Any]], budget: float) -> dict[str, Any]:
    """The run's row: FID at the last evaluation within ``budget`` CPU seconds, best evaluation, totals."""
    evals = [r for r in rows if r.get("fid") is not None]
    within = [r for r in evals if r["cpu_seconds"] <= budget]
    if not within:
        raise UsageError(f"{name}: no FID evaluation within {budget:g} CPU seconds (metrics.csv has {len(evals)})")
    last, best = within[-1], min(within, key=lambda r: r["fid"])
    end = rows[-1]
    return {
        "run": name,
        "preset": cfg.preset,
        **{k: getattr(cfg, k) for k in SHOWN_SETTINGS},
        "fid": last["fid"],
        "accuracy": last.get("accuracy"),
        "step": int(last["step"]),
        "cpu_seconds": last["cpu_seconds"],
        "best_fid": best["fid"],
        "best_step": int(best["step"]),
        "trained_steps": int(end["step"]),
        "trained_cpu_seconds": end["cpu_seconds"],
        "skipped_generator_steps": int(end.get("skipped_generator_steps") or 0),
        "ratio_clamped": int(end.get("ratio_clamped") or 0),
        "ratio_evaluations": int(end.get("ratio_evaluations") or 0),
    }


def markdown(info: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The ``images-runs`` section of docs/benchmarks.md."""
    m, ref = info["machine"], info["teacher"]
    best = min(rows, key=lambda r: r["fid"])
    verdict = (  # the same comparison as ``target_met`` in the json
        f"Target **met**: `{best['run']}` reaches FID {best['fid']:.2f} < teacher NFE {ref['nfe']} {ref['fid']:.2f} "
        f"at its last evaluation within the budget ({best['cpu_seconds']:.0f} CPU s, step {best['step']})."
        if best["fid"] < ref["fid"]
        else f"Target **missed**: the best run (`{best['run']}`, FID {best['fid']:.2f} at its last evaluation within "
        f"the budget) is worse than the teacher at NFE {ref['nfe']} (FID {ref['fid']:.2f})."
    )
    lines = [
        BEGIN,
        "## Images: long distillation runs within the 30-minute budget",
        "",
        f"`{info['command']}` on {m['cpu']} ({m['cores']} cores, torch {m['torch']}), {m['date']}. Budget "
        f"{info['cpu_budget']:.0f} CPU seconds of distillation per run (30 minutes of 2 cores; each run is one "
        f"process with one torch thread, and CPU time is counted so that a shared machine does not shrink the "
        f"budget). FID: feature-net space, {info['eval_samples']} samples on the runs' fixed evaluation noise "
        f"(seed {info['eval_seed']}); the teacher is scored on the same noise and labels. FID is taken at each run's "
        f"**last** evaluation within the budget (the best evaluation is shown for reference only: picking it "
        f"would select on the evaluation set). Curves: `docs/benchmarks/images_runs.png`; numbers: "
        f"`docs/benchmarks/images_runs.json`.",
        "",
        verdict,
        "",
        "| run | preset | lr | gen σ_min | ratio clamp | warm-up | FID (last in budget) | accuracy | at step | CPU s | "
        "best FID (step) | trained steps / CPU s | skipped gen. steps | ratio clamped | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| teacher Heun NFE {ref['nfe']} | — | — | — | — | — | {ref['fid']:.2f} | {ref['accuracy']:.3f} | — | "
        f"{ref['cpu_seconds']:.0f} (sampling) | — | — | — | — | |",
    ]
    for r in rows:
        clamped = f"{r['ratio_clamped']} / {r['ratio_evaluations']}" if r["ratio_evaluations"] else "—"
        note = []
        if r["trained_cpu_seconds"] < 0.95 * info["cpu_budget"]:
            note.append(f"stopped at {r['trained_cpu_seconds']:.0f} CPU s, short of the budget")
        note.append("beats the teacher" if r["fid"] < ref["fid"] else "worse than the teacher")
        lines.append(
            f"| {r['run']} | `{r['preset']}` | {r['lr_generator']:g} | {r['gen_sigma_min']:g} | {r['ratio_clamp']:g} | "
            f"{r['warmup_steps']} | **{r['fid']:.2f}** | {r['accuracy']:.3f} | {r['step']} | {r['cpu_seconds']:.0f} | "
            f"{r['best_fid']:.2f} ({r['best_step']}) | {r['trained_steps']} / {r['trained_cpu_seconds']:.0f} | "
            f"{r['skipped_generator_steps']} | {clamped} | {'; '.join(note)} |"
        )
    lines += ["", "![FID against CPU seconds](benchmarks/images_runs.png)", ""]
    lines += ["| " + " | ".join(r["run"] for r in rows) + " |", "|" + "---|" * len(rows)]
    lines += ["| " + " | ".join(f"![](benchmarks/images_runs/{r['run']}.png)" for r in rows) + " |", END]
    return "\n".join(lines)


def add_commands(bench_subparsers: argparse._SubParsersAction) -> None:
    """Register ``uni3d bench images-runs``."""
    p = bench_subparsers.add_parser("images-runs", help=BENCHMARKS["images-runs"].help)
    p.add_argument("runs", nargs="+", type=Path, help="uni3d distill run folders (the folder name labels the row)")
    p.add_argument("--cpu-budget", type=float, default=3600.0, help="CPU seconds per run (default 3600 = 30 min x 2)")
    p.add_argument("--nfe", type=int, default=35, help="the teacher's Heun NFE to compare with (default 35)")
    p.add_argument("--docs", type=Path, default=Path("docs"), help="docs folder to write into (default docs)")
    p.set_defaults(func=_bench_image_runs)


def _bench_image_runs(args: argparse.Namespace) -> int:
    if args.cpu_budget <= 0:
        raise UsageError(f"--cpu-budget must be > 0, got {args.cpu_budget:g}")
    runs = [(folder.name, *read_run(folder)) for folder in args.runs]
    first = runs[0][1]
    keys = ("eval_samples", "eval_seed", "features", "teacher")
    for name, cfg, _ in runs[1:]:
        if any(getattr(cfg, k) != getattr(first, k) for k in keys):
            raise UsageError(f"{name} was evaluated differently from {runs[0][0]} ({', '.join(keys)} must match)")
    rows = [summarize(name, cfg, metrics, args.cpu_budget) for name, cfg, metrics in runs]
    torch.set_num_threads(1)
    data = load_dataset("mnist", "train")
    teacher = load_teacher(first.teacher, data)
    evaluator = make_evaluator(
        first.features, teacher.num_classes, data, samples=first.eval_samples, seed=first.eval_seed
    )
    if evaluator is None:
        raise UsageError("the runs were made with --features none: there is no FID to compare")
    grids = args.docs / "benchmarks" / "images_runs"
    ref = teacher_row(teacher, evaluator, args.nfe, grids)
    for folder, row in zip(args.runs, rows, strict=True):
        samples = sorted((folder / "samples").glob("step_*.png"))
        if samples:
            grids.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(samples[-1], grids / f"{row['run']}.png")
    info = {
        "command": "uni3d bench images-runs "
        + " ".join(str(f) for f in args.runs)
        + f" --cpu-budget {args.cpu_budget:g}",
        "machine": machine(),
        "cpu_budget": args.cpu_budget,
        "eval_samples": first.eval_samples,
        "eval_seed": first.eval_seed,
        "teacher": ref,
    }
    best = min(rows, key=lambda r: r["fid"])
    target = {"best_run": best["run"], "target_met": best["fid"] < ref["fid"]}
    save_json(args.docs / "benchmarks" / "images_runs.json", {**info, **target, "runs": rows})
    curves = [(name, metrics) for name, _, metrics in runs]
    fid_curves_png(
        args.docs / "benchmarks" / "images_runs.png", curves, reference=(f"teacher NFE {args.nfe}", ref["fid"])
    )
    section = markdown(info, rows)
    replace_section(args.docs / "benchmarks.md", section)
    print(section)
    return 0
