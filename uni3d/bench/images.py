"""``uni3d bench images``: the MNIST teacher at several NFE against one-step students, means and spreads.

Every student starts from the same teacher (generator and fake score are copies of it) and trains the same
number of steps (``--steps``: a step budget, so a faster or slower machine changes the time column, not the
result), once per generator seed (``--seeds``). Every row of one table comes from one invocation on one machine.

Scores (:mod:`uni3d.tasks.images.fid`): FID in the repo's feature-net space against the 4,000 training digits
over ``--eval-samples`` samples (class ``i % 10`` for sample ``i``), classifier accuracy and entropy. A student
row is the mean and sample standard deviation over its seeds (every seed scored on the same evaluation noise);
a teacher row over ``--teacher-draws`` evaluation noise draws (the spread of the evaluation alone). The null
rows are real digits: the 1,000 held-out digits scored the same way. FID depends on the sample count, so every
row also reports ``FID@1k``, the mean FID over the 1,000-sample slices of its samples, which compares with the
held-out digits' 1,000. Speed: the distillation step's CPU time relative to one teacher forward+backward.

Writes ``docs/benchmarks/images.json`` (settings, every per-seed and per-draw row, the summary), sample grids
``docs/benchmarks/images/*.png`` (seed 0, draw 0) and the ``images`` section of ``docs/benchmarks.md``, after
every finished row; the same command run again skips the rows already measured with the same settings.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from uni3d.bench.common import machine, replace_section, section_markers
from uni3d.cli.commands import BENCHMARKS
from uni3d.diffusion.edm import heun_sample
from uni3d.errors import UsageError
from uni3d.io import save_json
from uni3d.losses import PRESET_NAMES, fake_score_loss, get_preset
from uni3d.models.edm.denoiser import EDMDenoiser
from uni3d.tasks.images.data import load_dataset
from uni3d.tasks.images.distill import ImageDistiller
from uni3d.tasks.images.distill_config import DistillConfig
from uni3d.tasks.images.distill_run import Evaluator, load_teacher, make_evaluator
from uni3d.tasks.images.fid import FeatureStats, features_and_probs, frechet_distance, score_samples
from uni3d.tasks.images.files import image_grid_png, weights_digest

BEGIN, END = section_markers("images")
TEACHER_NFES: tuple[int, ...] = (1, 11, 35)
STUDENTS: tuple[str, ...] = ("di", "sid", "uni-rkl", "uni-jeffreys")
SLICE = 1000
"""Samples per slice of ``FID@1k`` (the held-out digits' count)."""
GRID = 50
"""Images per sample grid (five rows, one column per class)."""
TARGET_RATIO = 0.8
"""The issue's target: the best uni-* student's mean FID at most this times the teacher's at NFE 35."""
_D = DistillConfig()


def add_commands(bench_subparsers: argparse._SubParsersAction) -> None:
    """Register ``images`` on the ``uni3d bench`` subparsers."""
    p = bench_subparsers.add_parser("images", help=BENCHMARKS["images"].help)
    p.add_argument("--steps", type=int, default=2000, help="distillation steps per student and seed (default 2000)")
    p.add_argument("--seeds", default="0,1,2", help="generator seeds per student (default 0,1,2)")
    p.add_argument("--teacher-draws", type=int, default=3, help="evaluation noise draws per teacher row (default 3)")
    p.add_argument("--batch-size", type=int, default=16, help="distillation batch size (default 16)")
    p.add_argument("--lr-generator", type=float, default=1e-4, help="generator learning rate (default 1e-4)")
    p.add_argument("--eval-samples", type=int, default=5000, help="samples per FID (default 5000)")
    p.add_argument("--ratio-clamp", type=float, default=1.0, help="|log r| bound of every student (default 1)")
    p.add_argument("--warmup-steps", type=int, default=200, help="fake-score and ratio-only first steps (default 200)")
    p.add_argument(
        "--ratio-motion",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="keep the expanded form's ratio-motion and DI terms (default off: r held constant per sample)",
    )
    p.add_argument(
        "--presets",
        default=",".join(STUDENTS),
        help=f"students, each 'preset' or 'preset@lr' (default {','.join(STUDENTS)})",
    )
    p.add_argument("--nfes", default=",".join(map(str, TEACHER_NFES)), help="teacher NFEs (default 1,11,35)")
    p.add_argument("--teacher", default="mnist", help="teacher (default: assets/mnist_teacher.pt)")
    p.add_argument("--features", default="mnist", help="feature net (default: assets/mnist_features.pt)")
    p.add_argument("--jobs", type=int, default=1, help="rows measured in parallel processes (default 1)")
    p.add_argument("--docs", type=Path, default=Path("docs"), help="docs folder to write into (default docs)")
    p.set_defaults(func=_bench_images)


# ---- measuring one row -------------------------------------------------------------------------------------------


def eval_noise(evaluator: Evaluator, draw: int) -> Tensor:
    """The evaluation noise of draw ``draw`` (draw 0: the evaluator's own, shared by every student seed)."""
    if draw == 0:
        return evaluator.noise
    gen = torch.Generator().manual_seed(_D.eval_seed + draw)
    return torch.randn(evaluator.noise.shape, generator=gen)


def scores(evaluator: Evaluator, images: Tensor) -> dict[str, Any]:
    """FID over all samples, ``FID@1k`` (mean over 1,000-sample slices), accuracy and entropies."""
    row = score_samples(evaluator.net, images, evaluator.reference, evaluator.labels).as_dict()
    count = images.shape[0] // SLICE
    if count == 0:
        return {**row, "fid_1k": None}
    finite = torch.isfinite(images.flatten(1)).all(1)[:, None, None, None]
    feats = features_and_probs(evaluator.net, torch.where(finite, images, torch.full_like(images, -1.0)))[0]
    slices = (FeatureStats.of(feats[i * SLICE : (i + 1) * SLICE]) for i in range(count))
    return {**row, "fid_1k": float(np.mean([frechet_distance(s, evaluator.reference) for s in slices]))}


@torch.no_grad()
def teacher_samples(teacher: EDMDenoiser, noise: Tensor, labels: Tensor | None, nfe: int, chunk: int = 250) -> Tensor:
    """The teacher's Heun samples of ``noise`` at ``nfe``, in chunks."""
    out = []
    for i in range(0, noise.shape[0], chunk):
        y = None if labels is None else labels[i : i + chunk]
        out.append(heun_sample(lambda x, s, y=y: teacher(x, s, y), noise[i : i + chunk], nfe))
    return torch.cat(out)


def teacher_row(teacher: EDMDenoiser, evaluator: Evaluator, nfe: int, out: Path, draw: int = 0) -> dict[str, Any]:
    """The teacher's Heun sampler at ``nfe`` on evaluation draw ``draw`` (one torch thread); its grid for draw 0."""
    torch.set_num_threads(1)
    t0 = time.process_time()
    images = teacher_samples(teacher, eval_noise(evaluator, draw), evaluator.labels, nfe)
    seconds = time.process_time() - t0
    if draw == 0:
        image_grid_png(out / f"teacher_nfe{nfe}.png", images[:GRID])
    return {"method": "teacher Heun", "nfe": nfe, "draw": draw, **scores(evaluator, images), "cpu_seconds": seconds}


def teacher_step_seconds(teacher: EDMDenoiser, batch: int, repeats: int = 5) -> float:
    """CPU seconds of one teacher forward+backward (EDM denoising loss) at ``batch``: the speed unit."""
    model = teacher.requires_grad_(True).train()
    x0 = torch.zeros(batch, *model.image_shape)
    labels = torch.zeros(batch, dtype=torch.long) if model.num_classes else None
    sigma = torch.ones(batch)
    times = []
    for _ in range(repeats + 1):
        t0 = time.process_time()
        fake_score_loss(model(x0 + torch.randn_like(x0), sigma, labels), x0, sigma).mean().backward()
        times.append(time.process_time() - t0)
    model.zero_grad(set_to_none=True)
    model.requires_grad_(False).eval()
    return sorted(times[1:])[len(times[1:]) // 2]


def student_row(cfg: DistillConfig, teacher_file: str, evaluator: Evaluator, out: Path, label: str) -> dict[str, Any]:
    """Distill ``cfg.preset`` for ``cfg.steps`` steps with ``cfg.seed`` (one torch thread); score the EMA generator
    on evaluation draw 0; the grid of seed 0 is named ``label``."""
    torch.set_num_threads(1)
    data = load_dataset("mnist", "train")
    distiller = ImageDistiller(cfg, load_teacher(teacher_file, data), data)
    t0, wall0 = time.process_time(), time.perf_counter()
    bar = tqdm(total=cfg.steps, desc=f"{label} seed {cfg.seed}", disable=not sys.stderr.isatty(), leave=False)
    while distiller.step_count < cfg.steps:
        distiller.step()
        bar.update(1)
    bar.close()
    train_cpu, train_wall = time.process_time() - t0, time.perf_counter() - wall0
    images = evaluator.samples(distiller)
    if cfg.seed == 0:
        image_grid_png(out / f"{label}.png", images[:GRID])
    return {
        "method": label,
        "preset": cfg.preset,
        "seed": cfg.seed,
        "nfe": 1,
        **scores(evaluator, images),
        "steps": distiller.step_count,
        "cpu_seconds": train_cpu,
        "wall_seconds": train_wall,
        "step_cpu_seconds": train_cpu / max(distiller.step_count, 1),
        **distiller.loop.counters.report("skip"),
    }


def student_label(cfg: DistillConfig) -> str:
    """``preset@lr`` (the generator learning rate), plus ``-const-r`` where a ratio preset holds ``r`` constant."""
    const = not cfg.ratio_motion and get_preset(cfg.preset).uses_ratio
    return f"{cfg.preset}@{cfg.lr_generator:g}" + ("-const-r" if const else "")


# ---- summary and report ------------------------------------------------------------------------------------------


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method and NFE: mean and sample standard deviation (0 for one run) of the scores."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["nfe"]), []).append(r)
    out = []
    for (method, nfe), runs in groups.items():
        fids = [r["fid"] for r in runs]
        summary: dict[str, Any] = {"method": method, "nfe": nfe, "runs": len(runs)}
        summary["fid"] = statistics.fmean(fids)
        summary["fid_sd"] = statistics.stdev(fids) if len(fids) > 1 else 0.0
        for key in ("fid_1k", "accuracy", "entropy", "cpu_seconds", "steps", "step_cpu_seconds"):
            values = [r[key] for r in runs if r.get(key) is not None]
            summary[key] = statistics.fmean(values) if values else None
        summary["skipped_generator_steps"] = sum(r.get("skipped_generator_steps", 0) for r in runs)
        summary["nonfinite"] = sum(r.get("nonfinite", 0) for r in runs)
        out.append(summary)
    return sorted(out, key=lambda r: (r["method"] != "teacher Heun", r["nfe"], r["method"]))


def verdict(summary: list[dict[str, Any]]) -> str:
    """The issue's target, stated with the numbers it rests on (met, or missed and by how much)."""
    teacher = next((r for r in summary if r["method"] == "teacher Heun" and r["nfe"] == 35), None)
    uni = [r for r in summary if r["method"].startswith("uni-")]
    if teacher is None or not uni:
        return "Target not evaluated (needs the teacher at NFE 35 and a uni-* student)."
    best = min(uni, key=lambda r: r["fid"])
    peers = [r for r in summary if r["method"].split("@")[0] in ("di", "sid")]
    goal = TARGET_RATIO * teacher["fid"]
    apart = best["fid"] + best["fid_sd"] < teacher["fid"] - teacher["fid_sd"]
    beats_peers = all(best["fid"] < p["fid"] for p in peers)
    met = best["fid"] <= goal and apart and beats_peers and bool(peers)
    peer_text = ", ".join(f"`{p['method']}` {p['fid']:.2f} ± {p['fid_sd']:.2f}" for p in peers) or "no di/sid row"
    return (
        f"Target {'**met**' if met else '**missed**'}: best uni-* student `{best['method']}` FID {best['fid']:.2f} "
        f"± {best['fid_sd']:.2f} against the teacher's {teacher['fid']:.2f} ± {teacher['fid_sd']:.2f} at NFE 35 "
        f"(target ≤ {goal:.2f}: {'yes' if best['fid'] <= goal else 'no'}; spreads apart: {'yes' if apart else 'no'}); "
        f"peers {peer_text} ({'all worse' if beats_peers and peers else 'not all worse'})."
    )


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "—" if v is None else format(v, spec)


def markdown(info: dict[str, Any], summary: list[dict[str, Any]]) -> str:
    """The images section of docs/benchmarks.md (partial while rows are still running)."""
    m, s = info["machine"], info["settings"]
    unit = info["teacher_step_cpu_seconds"]
    done, total = info["rows_done"]
    lines = [
        BEGIN,
        "## Images: one-step MNIST students vs the EDM teacher",
        "",
        f"`{info['command']}` on {m['cpu']} ({m['cores']} cores, torch {m['torch']}, one thread per row, "
        f"{s['jobs']} rows at a time), {m['date']}. Teacher `{s['teacher']}`, feature net `{s['features']}`. FID: "
        f"feature-net space, {s['eval_samples']} samples against the 4,000 training digits, mean ± sample standard "
        f"deviation over {len(s['seeds'])} generator seeds (students, one shared evaluation noise) or "
        f"{s['teacher_draws']} evaluation noise draws (teacher); `FID@1k`: mean over 1,000-sample slices, comparable "
        f"with the held-out digits (the null). Students: {s['steps']} steps each, batch {s['batch_size']}, generator lr "
        f"as in the row name, ratio clamp {s['ratio_clamp']:g}, {s['warmup_steps']} warm-up steps, ratio "
        f"{'moving' if s['ratio_motion'] else 'held constant per sample'}; step time relative to one teacher "
        f"forward+backward at the same batch ({unit * 1000:.0f} ms CPU). Raw rows: `docs/benchmarks/images.json`; "
        "grids (seed 0): `docs/benchmarks/images/`.",
        *(
            [
                "",
                f"The runs were measured on {len(info['row_cpus'])} machines ({'; '.join(info['row_cpus'])}; the "
                "command resumed there): steps are fixed, so the scores compare; the CPU seconds do not.",
            ]
            if len(info.get("row_cpus", [])) > 1
            else []
        ),
        "",
        verdict(summary) if done == total else f"Partial results: {done} of {total} runs measured so far.",
        "",
        "| method | NFE | FID (mean ± sd) | runs | FID@1k | accuracy | steps | CPU s per run | step / teacher f+b | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in info["data_rows"]:
        lines.append(
            f"| {r['method']} | — | {r['fid']:.2f} ({r['n']} digits) | 1 | {r['fid']:.2f} | "
            f"{_fmt(r['accuracy'], '.3f')} | — | — | — | null |"
        )
    for r in summary:
        teacher = r["method"] == "teacher Heun"
        note = []
        if r["skipped_generator_steps"] or r["nonfinite"]:
            note.append(f"{r['skipped_generator_steps']} skipped steps, {r['nonfinite']} non-finite samples")
        ratio = "—" if teacher else f"{r['step_cpu_seconds'] / unit:.1f}x"
        lines.append(
            f"| {'teacher Heun' if teacher else '`' + r['method'] + '`'} | {r['nfe']} | {r['fid']:.2f} ± "
            f"{r['fid_sd']:.2f} | {r['runs']} | {_fmt(r['fid_1k'])} | {_fmt(r['accuracy'], '.3f')} | "
            f"{'—' if teacher else round(r['steps'])} | {r['cpu_seconds']:.0f}{' (sampling)' if teacher else ''} | "
            f"{ratio} | {'; '.join(note)} |"
        )
    shown = [r for r in summary if r["method"] != "teacher Heun"]
    nfes = sorted({r["nfe"] for r in summary if r["method"] == "teacher Heun"})
    lines += ["", "| " + " | ".join(f"teacher NFE {n}" for n in nfes) + " |", "|" + "---|" * len(nfes)]
    lines += ["| " + " | ".join(f"![](benchmarks/images/teacher_nfe{n}.png)" for n in nfes) + " |", ""]
    if shown:
        lines += ["| " + " | ".join(f"`{r['method']}`" for r in shown) + " |", "|" + "---|" * len(shown)]
        lines += ["| " + " | ".join(f"![](benchmarks/images/{r['method']}.png)" for r in shown) + " |"]
    lines.append(END)
    return "\n".join(lines)


# ---- the command -------------------------------------------------------------------------------------------------


def _parse_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UsageError(f"no {what} given")
    return items


def _parse_ints(text: str, what: str) -> list[int]:
    try:
        return [int(t) for t in _parse_list(text, what)]
    except ValueError:
        raise UsageError(f"{what} must be integers separated by commas, got {text!r}") from None


def _student_spec(spec: str, lr: float) -> tuple[str, float]:
    """``preset`` or ``preset@lr`` (a generator learning rate for this row only)."""
    name, _, rate = spec.partition("@")
    if name not in PRESET_NAMES:
        raise UsageError(f"unknown preset {name!r}; valid: {', '.join(PRESET_NAMES)}")
    try:
        value = float(rate) if rate else lr
    except ValueError:
        raise UsageError(f"bad learning rate in {spec!r}; write preset@lr, e.g. uni-fkl@5e-5") from None
    if value <= 0:
        raise UsageError(f"the learning rate in {spec!r} must be > 0")
    return name, value


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """Everything the rows depend on (a rerun with the same settings resumes the table)."""
    return {
        "steps": args.steps,
        "seeds": _parse_ints(args.seeds, "seeds"),
        "teacher_draws": args.teacher_draws,
        "batch_size": args.batch_size,
        "lr_generator": args.lr_generator,
        "eval_samples": args.eval_samples,
        "ratio_clamp": args.ratio_clamp,
        "warmup_steps": args.warmup_steps,
        "ratio_motion": args.ratio_motion,
        "presets": [f"{p}@{lr:g}" for p, lr in (_student_spec(s, args.lr_generator) for s in args.presets.split(","))],
        "nfes": _parse_ints(args.nfes, "NFEs"),
        "teacher": args.teacher,
        "features": args.features,
        "jobs": args.jobs,
    }


def _command(s: dict[str, Any]) -> str:
    parts = ["uni3d bench images", f"--steps {s['steps']}", f"--seeds {','.join(map(str, s['seeds']))}"]
    parts += [f"--teacher-draws {s['teacher_draws']}", f"--batch-size {s['batch_size']}"]
    parts += [f"--lr-generator {s['lr_generator']:g}", f"--eval-samples {s['eval_samples']}"]
    parts += [f"--ratio-clamp {s['ratio_clamp']:g}", f"--warmup-steps {s['warmup_steps']}"]
    parts += ["--ratio-motion" if s["ratio_motion"] else "--no-ratio-motion", f"--presets {','.join(s['presets'])}"]
    parts += [f"--nfes {','.join(map(str, s['nfes']))}", f"--jobs {s['jobs']}"]
    return " ".join(parts)


def _key(row: dict[str, Any]) -> str:
    return f"{row['method']}|{row['nfe']}|{row.get('seed', row.get('draw'))}"


def _bench_images(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.steps < 1 or args.jobs < 1 or args.teacher_draws < 1 or args.eval_samples < 2:
        raise UsageError(
            f"need --steps, --jobs and --teacher-draws >= 1 and --eval-samples >= 2; got {args.steps}, {args.jobs}, "
            f"{args.teacher_draws}, {args.eval_samples}"
        )
    if args.warmup_steps > args.steps:
        raise UsageError(f"--warmup-steps {args.warmup_steps} exceeds --steps {args.steps}")
    torch.set_num_threads(1)
    base = DistillConfig(
        teacher=args.teacher,
        features=args.features,
        steps=args.steps,
        batch_size=args.batch_size,
        eval_samples=args.eval_samples,
        ratio_clamp=args.ratio_clamp,
        warmup_steps=args.warmup_steps,
        ratio_motion=args.ratio_motion,
    )
    data = load_dataset("mnist", "train")
    teacher = load_teacher(args.teacher, data)
    settings["teacher_digest"] = weights_digest(teacher)  # a replaced teacher file starts a new table
    evaluator = make_evaluator(args.features, teacher.num_classes, data, samples=args.eval_samples)
    if evaluator is None:
        raise UsageError("the benchmark needs a feature net (--features must not be 'none')")
    grids = args.docs / "benchmarks" / "images"
    held = load_dataset("mnist", "heldout")
    held_scores = score_samples(evaluator.net, held.images, evaluator.reference, held.labels).as_dict()
    json_path = args.docs / "benchmarks" / "images.json"
    previous: dict[str, Any] = {}
    if json_path.exists():
        try:
            previous = json.loads(json_path.read_text())
        except ValueError:
            previous = {}
    kept = previous.get("rows", []) if previous.get("settings") == settings else []
    info: dict[str, Any] = {
        "command": _command(settings),
        "settings": settings,
        "machine": machine(),
        "teacher_step_cpu_seconds": teacher_step_seconds(teacher, args.batch_size),
        "data_rows": [{"method": "data: held-out digits", **held_scores, "n": held.images.shape[0]}],
    }
    # round i: the teacher's draw i at every NFE, then every student's i-th seed; an interrupted table then holds
    # every preset on its first seeds rather than some presets on all of them
    tasks: list[tuple[Any, ...]] = []
    for i in range(max(args.teacher_draws, len(settings["seeds"]))):
        if i < args.teacher_draws:
            for nfe in sorted(settings["nfes"], reverse=True):
                row = {"method": "teacher Heun", "nfe": nfe, "draw": i}
                tasks.append((row, teacher_row, teacher, evaluator, nfe, grids, i))
        for spec in settings["presets"] if i < len(settings["seeds"]) else ():
            name, lr = _student_spec(spec, args.lr_generator)
            cfg = replace(base, preset=name, lr_generator=lr, seed=settings["seeds"][i])
            label = student_label(cfg)
            row = {"method": label, "nfe": 1, "seed": cfg.seed}
            tasks.append((row, student_row, cfg, args.teacher, evaluator, grids, label))
    done_keys = {_key(r) for r in kept}
    todo = [t for t in tasks if _key(t[0]) not in done_keys]
    rows = [r for r in kept if _key(r) in {_key(t[0]) for t in tasks}]
    print(f"{len(rows)} of {len(tasks)} runs already measured with these settings; {len(todo)} to go", file=sys.stderr)

    def record(row: dict[str, Any] | None) -> None:
        """Keep a finished run and rewrite the outputs, so an interrupted benchmark keeps what it measured."""
        if row is not None:
            rows.append({**row, "cpu": info["machine"]["cpu"]})
            print(f"{row['method']} NFE {row['nfe']}: FID {row['fid']:.2f} ({len(rows)}/{len(tasks)})", file=sys.stderr)
        summary = summarize(rows)
        info["rows_done"] = (len(rows), len(tasks))
        info["row_cpus"] = sorted({r.get("cpu", "unknown") for r in rows})
        save_json(json_path, {**info, "rows": rows, "summary": summary})
        replace_section(args.docs / "benchmarks.md", markdown(info, summary))

    record(None)
    if args.jobs > 1:  # one process per run, one thread each; students measure their own process's CPU time
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(*task[1:]) for task in todo]
            for future in as_completed(futures):
                record(future.result())
    else:
        for _, fn, *task_args in todo:
            record(fn(*task_args))
    print((args.docs / "benchmarks.md").read_text().split(BEGIN)[1].split(END)[0].strip())
    return 0
