"""``uni3d bench images``: the MNIST teacher at several NFE against one-step students with the same CPU budget.

Every student starts from the same teacher (generator and fake score are copies of it) and trains until its
process CPU time reaches ``--cpu-seconds`` (CPU time, not wall time, so a busy shared machine slows the run
but does not shrink the budget). Scores: FID in the repo's feature-net space against the training split,
classifier accuracy for the requested class, mean per-sample entropy, on the same fixed noise and labels for
every row (:mod:`uni3d.tasks.images.fid`). Speed: generator images/s (one forward, no gradient) and the distillation
step's CPU time relative to one teacher forward+backward (EDM denoising loss) at the same batch.

Writes ``docs/benchmarks/images.json``, sample grids ``docs/benchmarks/images/*.png`` and the section of
``docs/benchmarks.md`` between ``<!-- images:begin -->`` and ``<!-- images:end -->``. ``--add`` puts its rows
into the existing table instead (same batch and sample count); the section names the command, machine, CPU
budget and teacher step time that made them, and their step-time column uses their own machine's unit.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
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
from uni3d.tasks.images.fid import FeatureStats, features_and_probs, score_samples
from uni3d.tasks.images.files import image_grid_png

BEGIN, END = section_markers("images")
TEACHER_NFES: tuple[int, ...] = (1, 3, 5, 11, 35)
STUDENTS: tuple[str, ...] = ("di", "sid", "uni-rkl", "uni-fkl", "uni-jeffreys", "uni-js", "fdistill-fkl")
GRID = 50
"""Images per sample grid (five rows, one column per class)."""
_D = DistillConfig()


def add_commands(bench_subparsers: argparse._SubParsersAction) -> None:
    """Register ``images`` on the ``uni3d bench`` subparsers."""
    p = bench_subparsers.add_parser("images", help=BENCHMARKS["images"].help)
    p.add_argument("--cpu-seconds", type=float, default=180.0, help="training CPU seconds per student (default 180)")
    p.add_argument("--batch-size", type=int, default=16, help="distillation batch size (default 16)")
    p.add_argument("--lr-generator", type=float, default=3e-4, help="generator learning rate (default 3e-4)")
    p.add_argument("--eval-samples", type=int, default=1000, help="samples per FID (default 1000)")
    p.add_argument(
        "--ratio-clamp",
        type=float,
        default=_D.ratio_clamp,
        help=f"|log r| bound of every student (default {_D.ratio_clamp:g})",
    )
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=_D.warmup_steps,
        help=f"first steps train only the fake score and ratio head (default {_D.warmup_steps})",
    )
    p.add_argument(
        "--no-ratio-motion",
        dest="ratio_motion",
        action="store_false",
        help="hold every student's ratio constant per sample (drops the ratio-motion and DI terms)",
    )
    p.add_argument(
        "--presets",
        default=",".join(STUDENTS),
        help=f"students, each 'preset' or 'preset@lr' (default {','.join(STUDENTS)})",
    )
    p.add_argument("--nfes", default=None, help="teacher NFEs (default 1,3,5,11,35; none with --add)")
    p.add_argument("--teacher", default="mnist", help="teacher (default: assets/mnist_teacher.pt)")
    p.add_argument("--features", default="mnist", help="feature net (default: assets/mnist_features.pt)")
    p.add_argument("--jobs", type=int, default=1, help="students trained in parallel processes (default 1)")
    p.add_argument("--docs", type=Path, default=Path("docs"), help="docs folder to write into (default docs)")
    p.add_argument(
        "--add",
        action="store_true",
        help="add these rows to the table in DOCS instead of a new table (a row of the same name is replaced; "
        "another --cpu-seconds than the table's names the rows <label>-<s>cpus)",
    )
    p.set_defaults(func=_bench_images)


def _scores(evaluator: Evaluator, images: torch.Tensor) -> dict[str, Any]:
    return score_samples(evaluator.net, images, evaluator.reference, evaluator.labels).as_dict()


@torch.no_grad()
def teacher_row(teacher: EDMDenoiser, evaluator: Evaluator, nfe: int, out: Path) -> dict[str, Any]:
    """The teacher's Heun sampler at ``nfe`` on the evaluation noise (one torch thread); its grid."""
    torch.set_num_threads(1)
    t0 = time.process_time()
    chunks = []
    for i in range(0, evaluator.noise.shape[0], 250):
        labels = None if evaluator.labels is None else evaluator.labels[i : i + 250]
        chunks.append(heun_sample(lambda x, s, y=labels: teacher(x, s, y), evaluator.noise[i : i + 250], nfe))
    images = torch.cat(chunks)
    seconds = time.process_time() - t0
    image_grid_png(out / f"teacher_nfe{nfe}.png", images[:GRID])
    return {"method": "teacher Heun", "nfe": nfe, **_scores(evaluator, images), "cpu_seconds": seconds}


def teacher_step_seconds(teacher: EDMDenoiser, batch: int, repeats: int = 5) -> float:
    """CPU seconds of one teacher forward+backward (EDM denoising loss) at ``batch``: the speed unit."""
    model = teacher.requires_grad_(True).train()
    res = model.net.cfg.resolution
    x0 = torch.zeros(batch, model.net.cfg.in_channels, res, res)
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


def student_row(
    cfg: DistillConfig, teacher_file: str, evaluator: Evaluator, cpu_seconds: float, out: Path, label: str
) -> dict:
    """Distill ``cfg.preset`` until ``cpu_seconds`` of process CPU time (one torch thread); score the EMA generator.

    The row and its grid are named ``label`` (:func:`student_label`).
    """
    torch.set_num_threads(1)
    data = load_dataset("mnist", "train")
    distiller = ImageDistiller(cfg, load_teacher(teacher_file, data), data)
    t0, wall0 = time.process_time(), time.perf_counter()
    bar = tqdm(desc=cfg.preset, unit="step", disable=not sys.stderr.isatty(), leave=False)
    while time.process_time() - t0 < cpu_seconds:
        distiller.step()
        bar.update(1)
    bar.close()
    train_cpu, train_wall = time.process_time() - t0, time.perf_counter() - wall0
    images = evaluator.samples(distiller)
    image_grid_png(out / f"{label}.png", images[:GRID])
    z = evaluator.noise[: cfg.batch_size]
    labels = None if evaluator.labels is None else evaluator.labels[: cfg.batch_size]
    with torch.no_grad():
        t1 = time.perf_counter()
        for _ in range(3):
            distiller.ema(z, labels)
        per_batch = (time.perf_counter() - t1) / 3
    return {
        "method": label,
        "preset": cfg.preset,
        "lr_generator": cfg.lr_generator,
        "nfe": 1,
        **_scores(evaluator, images),
        "steps": distiller.step_count,
        "cpu_seconds": train_cpu,
        "wall_seconds": train_wall,
        "step_cpu_seconds": train_cpu / max(distiller.step_count, 1),
        "images_per_second": cfg.batch_size / per_batch,
        "loss_generator": distiller.loop.last.get("loss_generator"),
        **distiller.loop.counters.report("skip"),
    }


def student_label(cfg: DistillConfig, cpu_seconds: float | None = None) -> str:
    """``preset@lr`` (the generator learning rate), plus ``-const-r`` where a ratio preset holds ``r`` constant, plus
    ``-<cpu_seconds>cpus`` for a row added with another CPU budget than its table's."""
    const = not cfg.ratio_motion and get_preset(cfg.preset).uses_ratio
    budget = "" if cpu_seconds is None else f"-{cpu_seconds:g}cpus"
    return f"{cfg.preset}@{cfg.lr_generator:g}" + ("-const-r" if const else "") + budget


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "—" if v is None else format(v, spec)


def markdown(info: dict[str, Any], teacher: list[dict[str, Any]], students: list[dict[str, Any]]) -> str:
    """The images section of docs/benchmarks.md (partial while ``info["rows_done"]`` says rows are still running)."""
    m = info["machine"]
    nfe35 = next((r["fid"] for r in teacher if r["nfe"] == 35), None)
    best = min(students, key=lambda r: r["fid"]) if students else None
    if best is None or nfe35 is None:
        verdict = "Target not evaluated (no student or no NFE-35 teacher row)."
    elif best["fid"] < nfe35:
        verdict = f"Target **met**: best student `{best['method']}` FID {best['fid']:.2f} < teacher NFE 35 {nfe35:.2f}."
    else:
        verdict = (
            f"Target **missed**: the best student (`{best['method']}`, FID {best['fid']:.2f}) is worse than the "
            f"teacher at NFE 35 (FID {nfe35:.2f}) within this budget."
        )
    unit = info["teacher_step_cpu_seconds"]
    busy = (m["load_average_1min"] or 0) > m["cores"]
    shared = ": the machine was shared with other jobs, so wall times are inflated, CPU times less so" if busy else ""
    lines = [
        BEGIN,
        "## Images: one-step MNIST students vs the EDM teacher",
        "",
        f"`{info['command']}` on {m['cpu']} ({m['cores']} cores, torch {m['torch']}, {m['torch_threads']} thread; "
        f"load average {_fmt(m['load_average_1min'])} at the start{shared}), {m['date']}. Teacher `assets/mnist_teacher.pt`, feature net "
        f"`assets/mnist_features.pt` (commands in `docs/benchmarks/images.md`). FID: feature-net space, "
        f"{info['eval_samples']} samples (class `i % 10` for sample `i`, fixed noise) against the 4,000 training "
        f"digits; `data` rows are real digits scored the same way (the floor of this finite-sample FID). "
        f"Students: {info['cpu_seconds']:.0f} CPU seconds of distillation each ({info['jobs']} at a time, one "
        f"process and one thread each), batch {info['batch_size']}, "
        f"generator lr as in the row name (`preset@lr`), ratio clamp {info['config']['ratio_clamp']:g}, "
        f"{info['config']['warmup_steps']} warm-up steps (fake score and ratio head only), the default `DistillConfig` "
        f"otherwise (gen_sigma_min {info['config']['gen_sigma_min']}, sigma_init {info['config']['sigma_init']}, EMA "
        f"{info['config']['ema']}). Each student is scored once, at the end of its budget (EMA generator). Step time is relative to one teacher forward+backward at the same batch "
        f"({unit * 1000:.0f} ms CPU). Grids: `docs/benchmarks/images/`; raw numbers: `docs/benchmarks/images.json`.",
        *_added_lines(info),
        "",
        verdict
        if info.get("rows_done", "").split(" of ")[0] == info.get("rows_done", " of ").split(" of ")[1]
        else f"Partial results: {info.get('rows_done')} rows measured so far.",
        "",
        "| method | NFE | FID | accuracy | entropy | steps | CPU s | step / teacher f+b | images/s | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in info["data_rows"]:
        lines.append(
            f"| {r['method']} | — | {r['fid']:.2f} | {_fmt(r['accuracy'], '.3f')} | {r['entropy']:.3f} "
            "| — | — | — | — | floor |"
        )
    for r in teacher:
        lines.append(
            f"| teacher Heun | {r['nfe']} | {r['fid']:.2f} | {_fmt(r['accuracy'], '.3f')} | "
            f"{r['entropy']:.3f} | — | {r['cpu_seconds']:.1f} (sampling) | — | "
            f"{info['eval_samples'] / max(r['cpu_seconds'], 1e-9):.0f} | |"
        )
    for r in students:
        note = []
        if nfe35 is not None:
            note.append("beats NFE 35" if r["fid"] < nfe35 else "worse than NFE 35")
        if "command" in r:
            note.append("added later (above)")
        if r["skipped_generator_steps"] or r["nonfinite"]:
            note.append(f"{r['skipped_generator_steps']} skipped steps, {r['nonfinite']} non-finite samples")
        lines.append(
            f"| `{r['method']}` | 1 | {r['fid']:.2f} | {_fmt(r['accuracy'], '.3f')} | {r['entropy']:.3f} | "
            f"{r['steps']} | {r['cpu_seconds']:.0f} | {r['step_cpu_seconds'] / r.get('teacher_step_cpu_seconds', unit):.1f}x | "
            f"{r['images_per_second']:.0f} | {'; '.join(note)} |"
        )
    lines += ["", "| " + " | ".join(f"teacher NFE {n}" for n in info["nfes"]) + " |"]
    lines += ["|" + "---|" * len(info["nfes"])]
    lines += ["| " + " | ".join(f"![](benchmarks/images/teacher_nfe{n}.png)" for n in info["nfes"]) + " |", ""]
    if students:
        lines += ["| " + " | ".join(f"`{r['method']}`" for r in students) + " |", "|" + "---|" * len(students)]
        lines += ["| " + " | ".join(f"![](benchmarks/images/{r['method']}.png)" for r in students) + " |"]
    lines.append(END)
    return "\n".join(lines)


def _added_lines(info: dict[str, Any]) -> list[str]:
    """One paragraph per ``--add`` invocation: its command, machine, date, budget and rows."""
    lines = []
    for a in info.get("added", []):
        m = a["machine"]
        rows = ", ".join(f"`{name}`" for name in a["rows"])
        lines += [
            "",
            f"Rows {rows} added by `{a['command']}` on {m['cpu']}, {m['date']}: {a['cpu_seconds']:.0f} CPU s each; "
            f"one teacher forward+backward took {a['teacher_step_cpu_seconds'] * 1000:.0f} ms CPU there "
            f"(the table's: {info['teacher_step_cpu_seconds'] * 1000:.0f} ms), so compare their steps as well.",
        ]
    return lines


def _existing_table(args: argparse.Namespace, info: dict[str, Any]) -> dict[str, Any]:
    """The images.json that ``--add`` extends; a one-line error if it is missing or not comparable."""
    path = args.docs / "benchmarks" / "images.json"
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        raise UsageError(f"--add needs a table to add to, and {path} is missing or unreadable") from None
    for key in ("batch_size", "eval_samples"):
        if old.get(key) != info[key]:
            flag = "--" + key.replace("_", "-")
            raise UsageError(f"--add: {flag} {info[key]:g} differs from the table's {old.get(key)}; rows must share it")
    return old


def _parse_list(text: str, valid: tuple[str, ...] | None, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if valid is not None and t not in valid]
    if bad or not items:
        raise UsageError(f"unknown {what} {', '.join(bad) or '(none given)'}; valid: {', '.join(valid or ())}")
    return items


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


def _command(args: argparse.Namespace) -> str:
    parts = ["uni3d bench images", f"--cpu-seconds {args.cpu_seconds:g}", f"--batch-size {args.batch_size}"]
    parts += [f"--lr-generator {args.lr_generator:g}", f"--eval-samples {args.eval_samples}", f"--jobs {args.jobs}"]
    if args.ratio_clamp != _D.ratio_clamp:
        parts.append(f"--ratio-clamp {args.ratio_clamp:g}")
    if args.warmup_steps != _D.warmup_steps:
        parts.append(f"--warmup-steps {args.warmup_steps}")
    if not args.ratio_motion:
        parts.append("--no-ratio-motion")
    if args.presets != ",".join(STUDENTS):
        parts.append(f"--presets {args.presets}")
    if args.nfes is not None:
        parts.append(f"--nfes {args.nfes}")
    return " ".join(parts + ["--add"] * args.add)


def _bench_images(args: argparse.Namespace) -> int:
    presets = [_student_spec(spec, args.lr_generator) for spec in _parse_list(args.presets, None, "preset(s)")]
    if args.nfes is None:
        nfes = [] if args.add else list(TEACHER_NFES)
    else:
        nfes = [int(n) for n in _parse_list(args.nfes, None, "NFE")]
    if args.cpu_seconds <= 0 or args.jobs < 1:
        raise UsageError(f"need --cpu-seconds > 0 and --jobs >= 1, got {args.cpu_seconds:g} and {args.jobs}")
    torch.set_num_threads(1)
    base = DistillConfig(
        teacher=args.teacher,
        features=args.features,
        batch_size=args.batch_size,
        lr_generator=args.lr_generator,
        eval_samples=args.eval_samples,
        ratio_clamp=args.ratio_clamp,
        warmup_steps=args.warmup_steps,
        ratio_motion=args.ratio_motion,
    )
    data = load_dataset("mnist", "train")
    teacher = load_teacher(args.teacher, data)
    evaluator = make_evaluator(base, teacher.num_classes, data)
    if evaluator is None:
        raise UsageError("the benchmark needs a feature net (--features must not be 'none')")
    grids = args.docs / "benchmarks" / "images"
    held = load_dataset("mnist", "heldout")
    net = evaluator.net
    data_rows = []
    for name, images, labels in (("data: held-out digits", held.images, held.labels),):
        feats = FeatureStats.of(features_and_probs(net, images)[0])
        scores = score_samples(net, images, evaluator.reference, labels).as_dict()
        data_rows.append({"method": name, **scores, "n": images.shape[0], "trace_cov": float(feats.cov.trace())})
    info: dict[str, Any] = {
        "command": _command(args),
        "machine": machine(),
        "cpu_seconds": args.cpu_seconds,
        "batch_size": args.batch_size,
        "jobs": args.jobs,
        "lr_generator": args.lr_generator,
        "eval_samples": args.eval_samples,
        "nfes": nfes,
        "config": {k: v for k, v in base.as_dict().items() if k not in ("preset", "teacher", "features")},
        "teacher_step_cpu_seconds": teacher_step_seconds(teacher, args.batch_size),
        "data_rows": data_rows,
    }
    configs = [replace(base, preset=p, lr_generator=lr) for p, lr in presets]
    kept_teacher: list[dict[str, Any]] = []
    kept_students: list[dict[str, Any]] = []
    stamp: dict[str, Any] = {}  # what each row of an --add run carries: its command and its machine's unit
    labels = [student_label(cfg) for cfg in configs]
    if args.add:
        old = _existing_table(args, info)
        if args.cpu_seconds != old["cpu_seconds"]:  # another budget: its own rows, beside the table's
            labels = [student_label(cfg, args.cpu_seconds) for cfg in configs]
        added = {
            "command": info["command"],
            "machine": info["machine"],
            "cpu_seconds": args.cpu_seconds,
            "teacher_step_cpu_seconds": info["teacher_step_cpu_seconds"],
            "rows": labels + [f"teacher NFE {n}" for n in nfes],
        }
        stamp = {k: added[k] for k in ("command", "teacher_step_cpu_seconds")}
        kept_teacher = [r for r in old["teacher"] if r["nfe"] not in nfes]
        kept_students = [r for r in old["students"] if r["method"] not in labels]
        keep = ("teacher", "students", "rows_done")
        info = {**{k: v for k, v in old.items() if k not in keep}, "added": [*old.get("added", []), added]}
    tasks: list[tuple[Any, ...]] = [(teacher_row, teacher, evaluator, nfe, grids) for nfe in sorted(nfes)[::-1]]
    tasks += [
        (student_row, cfg, args.teacher, evaluator, args.cpu_seconds, grids, label)
        for cfg, label in zip(configs, labels, strict=True)
    ]
    done: dict[int, dict[str, Any]] = {}

    def record(index: int, row: dict[str, Any]) -> None:
        """Keep a finished row and rewrite the outputs, so an interrupted benchmark keeps what it measured."""
        done[index] = {**row, **stamp}
        print(f"{row['method']} NFE {row['nfe']}: FID {row['fid']:.2f} ({len(done)}/{len(tasks)})", file=sys.stderr)
        new = [done[i] for i in sorted(done)]
        teacher_done = sorted(kept_teacher + [r for r in new if r["method"] == "teacher Heun"], key=lambda r: r["nfe"])
        students = kept_students + [r for r in new if r["method"] != "teacher Heun"]
        total = len(kept_teacher) + len(kept_students) + len(tasks)
        info["rows_done"] = f"{total - len(tasks) + len(done)} of {total}"
        save_json(args.docs / "benchmarks" / "images.json", {**info, "teacher": teacher_done, "students": students})
        section = markdown(info, teacher_done, students)
        replace_section(args.docs / "benchmarks.md", section)

    if args.jobs > 1:  # one process per row, one thread each; students measure their own process's CPU time
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(*task): i for i, task in enumerate(tasks)}
            for future in as_completed(futures):
                record(futures[future], future.result())
    else:
        for i, (fn, *task_args) in enumerate(tasks):
            record(i, fn(*task_args))
    print((args.docs / "benchmarks.md").read_text().split(BEGIN)[1].split(END)[0].strip())
    return 0
