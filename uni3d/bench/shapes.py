"""``uni3d bench shapes``: text to 3D on the embedded prior, scored against the true primitives.

Each prompt of the prompt file names a primitive and/or a colour of the prior's dataset
(:mod:`uni3d.tasks.embedded_prior.primitives`). A prompt naming both ("a red cube") is scored per preset on one seed:

- **Chamfer** and **colour** (:mod:`uni3d.bench.shape_metrics`): distance to the true primitive over its
  bounding-box diagonal, and the mean surface albedo against the named colour;
- **seconds**: wall and CPU (``time.process_time``) of the whole run, training and export, with the machine's
  load average (the machine may be shared).

A prompt that leaves the shape or colour open ("a cube", "a red object") is the diversity half: ``--seeds``
seeds per preset, each asset classified (nearest primitive by that Chamfer, nearest named colour), and the
distinct shapes and colours counted. Every finished run is written at once to ``docs/benchmarks/shapes.json``
and the ``<!-- shapes:begin -->`` section of ``docs/benchmarks.md``; a rerun skips the runs already there
(keyed by prompt, preset, steps, seed and settings), so a killed benchmark resumes. ``--config`` settings other
than the defaults label their rows (:func:`settings_label`): the tables give such rows their own lines, and a
rerun with the defaults does not take them for its own. When a default changes, the rows made under the old
one are relabelled with it (the json is edited once), so every unlabelled row is a run of today's defaults.
``--reexport`` exports the finished runs again from their final checkpoints (after a change to the mesh
export) and scores them again, keeping their training times; ``--rescore`` only scores their exported meshes
again (after a change to the metrics); the rows record the date.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trimesh

from uni3d.bench.common import machine, previous_rows
from uni3d.bench.shape_metrics import Target, parse_target, score_mesh
from uni3d.bench.shapes_report import PRESETS, row_settings, tiles_folder, write_results
from uni3d.bench.shapes_sheet import store_tiles
from uni3d.cli.commands import BENCHMARKS
from uni3d.config import read_config_file
from uni3d.errors import UsageError
from uni3d.tasks.text_to_3d.batch import read_prompts, run_folder
from uni3d.tasks.text_to_3d.config import GenerateConfig

# ---- runs -----------------------------------------------------------------------------------------------------


KEYED_ELSEWHERE = ("prompt", "preset", "seed", "steps")
"""Config fields that a row records in its own columns, left out of its settings label."""
SEPARATOR = "; "


def run_key(prompt: str, preset: str, steps: int, seed: int, settings: str = "") -> str:
    """A row's identity; ``settings`` is its :func:`settings_label` (empty for the defaults)."""
    key = f"{prompt}|{preset}|{steps}|{seed}"
    return f"{key}|{settings}" if settings else key


def row_key(row: dict[str, Any]) -> str:
    """:func:`run_key` of a benchmark row with its :func:`training_label`: runs that differ only in their
    export settings are one run (``--reexport`` exports it again with other export settings)."""
    return run_key(row["prompt"], row["preset"], row["steps"], row["seed"], training_label(row_settings(row)))


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


def settings_label(settings: dict[str, Any]) -> str:
    """``"k=v; ..."`` of the generate settings that differ from :class:`GenerateConfig`'s defaults, sorted by
    name, nested fields dotted (``field.blob_radius=0.5``); ``""`` when every setting is a default. The prompt,
    preset, seed and step budget are left out: rows have their own columns for them."""
    chosen = _flat(dataclasses.asdict(GenerateConfig.from_dict({**settings, "prompt": "x"})))
    default = _flat(dataclasses.asdict(GenerateConfig.from_dict({"prompt": "x"})))
    changed = [f"{k}={chosen[k]}" for k in sorted(chosen) if k not in KEYED_ELSEWHERE and chosen[k] != default[k]]
    return SEPARATOR.join(changed)


def training_label(label: str) -> str:
    """The part of a settings label that the training depends on (the export settings left out)."""
    return SEPARATOR.join(item for item in label.split(SEPARATOR) if item and not item.startswith("export."))


def run_one(
    prior: Any,
    target: Any,
    preset: str,
    seed: int,
    settings: dict[str, Any],
    out: Path,
    *,
    score: Callable[[trimesh.Trimesh, Any], dict[str, Any]] = score_mesh,
) -> dict[str, Any]:
    """Generate one asset for ``target.prompt`` (resuming its folder if any) and ``score`` its exported mesh against
    ``target``; failures are rows with ``status: failed``."""
    from uni3d.tasks.text_to_3d.run import generate  # diffusers: imported only when a benchmark runs

    cfg = GenerateConfig.from_dict({**settings, "prompt": target.prompt, "preset": preset, "seed": seed})
    row: dict[str, Any] = {"prompt": target.prompt, "preset": preset, "steps": cfg.steps, "seed": seed}
    row.update(settings=settings_label(settings), out=str(out))
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        metrics = generate(cfg, out, prior=prior, progress=False)
    except Exception as err:  # one failed run is a row, never the end of the benchmark
        row.update(status="failed", error=f"{type(err).__name__}: {err}".splitlines()[0][:300])
        traceback.print_exc()
        return row
    row.update(
        status="done",
        wall_seconds=round(time.perf_counter() - wall, 2),
        cpu_seconds=round(time.process_time() - cpu, 2),
        train_seconds=metrics["train_seconds"],
        export_seconds=metrics["export_seconds"],
        resumed_from_step=metrics["resumed_from_step"],
        rollbacks=metrics["rollbacks"],
        load_average_1min=machine()["load_average_1min"],
    )
    mesh = trimesh.load(out / "model_vertex_color.glb", force="mesh")
    row.update(score(mesh, target))
    return row


def reexport_one(prior: Any, target: Target, row: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Export a finished run again from its final checkpoint and score it again; a failure keeps ``row``."""
    from uni3d.tasks.text_to_3d.run import generate

    cfg = GenerateConfig.from_dict({**settings, "prompt": row["prompt"], "preset": row["preset"], "seed": row["seed"]})
    out = Path(row["out"])
    (out / "metrics.json").unlink(missing_ok=True)
    try:
        metrics = generate(cfg, out, prior=prior, progress=False)
    except Exception:  # the old row stays; the benchmark goes on
        traceback.print_exc()
        return row
    mesh = trimesh.load(out / "model_vertex_color.glb", force="mesh")
    return {
        **row,
        "settings": settings_label(settings),
        "export_seconds": metrics["export_seconds"],
        "reexported": machine()["date"],
        **score_mesh(mesh, target),
    }


def rescore_one(target: Target, row: dict[str, Any]) -> dict[str, Any]:
    """Score a finished run's exported mesh again; a run folder without its mesh keeps ``row``."""
    mesh_path = Path(row["out"]) / "model_vertex_color.glb"
    if not mesh_path.is_file():
        return row
    mesh = trimesh.load(mesh_path, force="mesh")
    return {**row, "rescored": machine()["date"], **score_mesh(mesh, target)}


def plan(
    targets: list[Target], presets: list[str], seeds: int, accuracy_seeds: int = 1
) -> list[tuple[Target, str, int]]:
    """Runs in order: preset by preset, the specified prompts (seeds ``0 .. accuracy_seeds - 1``, seed by seed)
    then the open ones (``seeds`` seeds)."""
    runs = []
    for preset in presets:
        runs += [(t, preset, s) for s in range(accuracy_seeds) for t in targets if t.specified]
        runs += [(t, preset, s) for t in targets if not t.specified for s in range(seeds)]
    return runs


def load_settings_prior(settings: dict[str, Any]) -> Any:
    """The prior that generate settings name (diffusers is imported only here, when a benchmark runs)."""
    from uni3d.tasks.text_to_3d.run import load_prior

    return load_prior(GenerateConfig.from_dict({**settings, "prompt": "x"}))


def run_bench(
    prompts: list[str],
    presets: list[str],
    settings: dict[str, Any],
    seeds: int,
    out: Path,
    docs: Path,
    prior: Any = None,
    log: Callable[[str], None] = print,
    command: str | None = None,
    reexport: bool = False,
    accuracy_seeds: int = 1,
    rescore: bool = False,
) -> list[dict[str, Any]]:
    """Run (or resume) the benchmark; after every run, rewrite the json and the docs section. Returns the rows.
    ``reexport``: the planned runs already done are exported and scored again (:func:`reexport_one`) first;
    ``rescore``: only scored again (:func:`rescore_one`).

    ``command`` (the command line) is recorded with the date in the json's ``invocations`` and the docs, so the
    section says exactly what was run."""
    json_path = docs / "benchmarks" / "shapes.json"
    rows, invocations = previous_rows(json_path)
    steps = GenerateConfig.from_dict({**settings, "prompt": "x"}).steps
    tag = training_label(settings_label(settings))
    done = {row_key(r) for r in rows}
    planned = plan([parse_target(q) for q in prompts], presets, seeds, accuracy_seeds)
    todo = [(t, p, s) for t, p, s in planned if run_key(t.prompt, p, steps, s, tag) not in done]
    log(f"{len(todo)} runs to do ({len(done)} already in {json_path})")
    if command is not None:
        now = machine()
        invocations.append(
            {"command": command, "date": now["date"], "cpu": now["cpu"], "planned": len(planned), "runs": len(todo)}
        )
    if reexport or rescore:
        keys = {run_key(t.prompt, p, steps, s, tag): t for t, p, s in planned}
        again = [(i, keys[row_key(r)]) for i, r in enumerate(rows) if row_key(r) in keys]
        verb, label = ("exporting", "re-export") if reexport else ("scoring", "rescore")
        log(f"{verb} {len(again)} finished runs again")
        for n, (i, target) in enumerate(again, 1):
            if reexport:
                prior = prior if prior is not None else load_settings_prior(settings)
                row = reexport_one(prior, target, rows[i], settings)
            else:
                row = rescore_one(target, rows[i])
            if row is rows[i]:  # its run folder is gone or its export failed: nothing new to write
                continue
            rows[i] = row
            if reexport:
                store_tiles(row, tiles_folder(docs))  # the sheet's stored pictures of the run are stale
            log(f"[{label} {n}/{len(again)}] {_one_line(row)}")
            write_results(docs, rows, invocations)
    for i, (target, preset, seed) in enumerate(todo, 1):
        prior = prior if prior is not None else load_settings_prior(settings)
        folder = run_folder(out / preset / f"steps-{steps}", f"{target.prompt} seed {seed}")
        row = run_one(prior, target, preset, seed, settings, folder)
        rows.append(row)
        log(f"[{i}/{len(todo)}] {_one_line(row)}")
        write_results(docs, rows, invocations)
    if not todo:
        write_results(docs, rows, invocations)
    return rows


def _one_line(row: dict[str, Any]) -> str:
    head = f"{row['preset']:12s} {row['prompt']!r} seed {row['seed']}"
    if row["status"] != "done":
        return f"{head}: FAILED {row['error']}"
    cd = f"chamfer {row['chamfer']:.3f} " if "chamfer" in row else ""
    return (
        f"{head}: {cd}shape {row['shape_pred']} colour {row['colour_pred']} "
        f"{row['wall_seconds']:.0f} s wall {row['cpu_seconds']:.0f} s cpu"
    )


def add_commands(bench_subparsers: argparse._SubParsersAction) -> None:
    """Register ``shapes`` on the ``uni3d bench`` subparsers."""
    p = bench_subparsers.add_parser("shapes", help=BENCHMARKS["shapes"].help)
    p.add_argument("--prompts", type=Path, default=Path("prompts/shapes.txt"), help="prompt file")
    p.add_argument("--presets", default=",".join(PRESETS), help=f"comma-separated (default {','.join(PRESETS)})")
    p.add_argument("--steps", type=int, default=None, help="steps per run (default: the generate default)")
    p.add_argument("--seeds", type=int, default=8, help="seeds per under-specified prompt and preset (default 8)")
    p.add_argument(
        "--accuracy-seeds",
        type=int,
        default=1,
        help="seeds per specified prompt and preset (default 1: seed 0; more fill the 'over seeds' table)",
    )
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts (after --only)")
    p.add_argument("--only", choices=("all", "accuracy", "diversity"), default="all", help="which prompts to run")
    p.add_argument("--config", type=Path, default=None, help="YAML/JSON generate settings for every run")
    p.add_argument(
        "--out", type=Path, default=Path("runs/bench-shapes"), help="run folders (default runs/bench-shapes)"
    )
    p.add_argument("--docs", type=Path, default=Path("docs"), help="docs folder to write into (default docs)")
    p.add_argument(
        "--reexport",
        action="store_true",
        help="export the finished runs again from their final checkpoints and score them again (after an export change)",
    )
    p.add_argument(
        "--rescore",
        action="store_true",
        help="score the finished runs' exported meshes again (after a metric change); runs whose folder is gone keep "
        "their scores",
    )
    p.set_defaults(func=_bench_shapes)


def _bench_shapes(args: argparse.Namespace) -> int:
    settings: dict[str, Any] = read_config_file(args.config, "generate") if args.config else {}
    if args.steps is not None:
        settings["steps"] = args.steps
    if GenerateConfig.from_dict({**settings, "prompt": "check"}).particles != 1:  # a bad setting fails here too
        raise UsageError("bench shapes scores one asset per run; give particles: 1 (several are for coverage)")
    prompts = [p.prompt for p in read_prompts(args.prompts)]
    if args.only != "all":
        prompts = [p for p in prompts if parse_target(p).specified == (args.only == "accuracy")]
    prompts = prompts[: args.limit]
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    for preset in presets:
        GenerateConfig(prompt="check", preset=preset)  # unknown presets: a one-line error now
    command = "uni3d " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.reexport and args.rescore:
        raise UsageError("--reexport already scores the runs again; give --reexport or --rescore, not both")
    if args.seeds < 1 or args.accuracy_seeds < 1:
        raise UsageError(f"--seeds and --accuracy-seeds must be >= 1, got {args.seeds} and {args.accuracy_seeds}")
    run_bench(
        prompts,
        presets,
        settings,
        args.seeds,
        args.out,
        args.docs,
        command=command,
        reexport=args.reexport,
        accuracy_seeds=args.accuracy_seeds,
        rescore=args.rescore,
    )
    return 0
