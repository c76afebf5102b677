"""``uni3d bench shapes``: text to 3D on the embedded prior, scored against the true primitives (issue 5).

Each prompt of the prompt file names a primitive and/or a colour of the prior's dataset
(:mod:`uni3d.prior.primitives`). A prompt naming both ("a red cube") is scored per preset on one seed:

- **Chamfer** and **colour** (:mod:`uni3d.bench.shape_metrics`): distance to the true primitive over its
  bounding-box diagonal, and the mean surface albedo against the named colour;
- **seconds**: wall and CPU (``time.process_time``) of the whole run, training and export, with the machine's
  load average (the machine may be shared).

A prompt that leaves the shape or colour open ("a cube", "a red object") is the diversity half: ``--seeds``
seeds per preset, each asset classified (nearest primitive by that Chamfer, nearest named colour), and the
distinct shapes and colours counted. Every finished run is written at once to ``docs/benchmarks/shapes.json``
and the ``<!-- shapes:begin -->`` section of ``docs/benchmarks.md``; a rerun skips the runs already there
(keyed by prompt, preset, steps, seed), so a killed benchmark resumes. ``--reexport`` exports the finished
runs again from their final checkpoints (after a change to the mesh export) and scores them again, keeping
their training times; the rows record the date.
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from uni3d.bench.common import machine, replace_section, section_markers
from uni3d.bench.shape_metrics import Target, parse_target, primitive_mesh, score_mesh, shape_chamfer
from uni3d.bench.shapes_sheet import contact_sheet_image
from uni3d.io import atomic_write, save_json
from uni3d.pipeline.batch import read_prompts, run_folder
from uni3d.pipeline.config import GenerateConfig, read_config_file

BEGIN, END = section_markers("shapes")
PRESETS = ("sds", "vsd", "uni-rkl", "uni-fkl", "uni-jeffreys")
CHAMFER_TARGET = 0.05
"""Issue 5's target: Chamfer at most 5 % of the true bounding-box diagonal."""
SECONDS_TARGET = 300.0
"""Issue 5's target: at most 5 minutes per prompt (training + export) on 2 CPU cores."""
PROMPT_TARGET = 8
"""Issue 5's target: Chamfer and colour right for at least 8 of the 10 prompts (default preset)."""


# ---- runs -----------------------------------------------------------------------------------------------------


def run_key(prompt: str, preset: str, steps: int, seed: int) -> str:
    return f"{prompt}|{preset}|{steps}|{seed}"


def run_one(prior: Any, target: Target, preset: str, seed: int, settings: dict[str, Any], out: Path) -> dict[str, Any]:
    """Generate one asset (resuming its folder if any) and score it; failures are rows with ``status: failed``."""
    from uni3d.pipeline.run import generate  # diffusers: imported only when a benchmark runs

    cfg = GenerateConfig.from_dict({**settings, "prompt": target.prompt, "preset": preset, "seed": seed})
    row: dict[str, Any] = {"prompt": target.prompt, "preset": preset, "steps": cfg.steps, "seed": seed}
    row["out"] = str(out)
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
    row.update(score_mesh(mesh, target))
    return row


def reexport_one(prior: Any, target: Target, row: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Export a finished run again from its final checkpoint and score it again; a failure keeps ``row``."""
    from uni3d.pipeline.run import generate

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
        "export_seconds": metrics["export_seconds"],
        "reexported": machine()["date"],
        **score_mesh(mesh, target),
    }


def plan(targets: list[Target], presets: list[str], seeds: int) -> list[tuple[Target, str, int]]:
    """Runs in order: preset by preset, the specified prompts (seed 0) then the open ones (``seeds`` seeds)."""
    runs = []
    for preset in presets:
        runs += [(t, preset, 0) for t in targets if t.specified]
        runs += [(t, preset, s) for t in targets if not t.specified for s in range(seeds)]
    return runs


def _load_prior(settings: dict[str, Any]) -> Any:
    from uni3d.pipeline.run import load_prior

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
) -> list[dict[str, Any]]:
    """Run (or resume) the benchmark; after every run, rewrite the json and the docs section. Returns the rows.
    ``reexport``: the planned runs already done are exported and scored again (:func:`reexport_one`) first.

    ``command`` (the command line) is recorded with the date in the json's ``invocations`` and the docs, so the
    section says exactly what was run."""
    json_path = docs / "benchmarks" / "shapes.json"
    rows: list[dict[str, Any]] = []
    invocations: list[dict[str, Any]] = []
    if json_path.is_file():
        saved = json.loads(json_path.read_text())
        rows = [r for r in saved.get("rows", []) if r.get("status") == "done"]
        invocations = list(saved.get("invocations", []))
    steps = GenerateConfig.from_dict({**settings, "prompt": "x"}).steps
    done = {run_key(r["prompt"], r["preset"], r["steps"], r["seed"]) for r in rows}
    planned = plan([parse_target(q) for q in prompts], presets, seeds)
    todo = [(t, p, s) for t, p, s in planned if run_key(t.prompt, p, steps, s) not in done]
    log(f"{len(todo)} runs to do ({len(done)} already in {json_path})")
    if command is not None:
        invocations.append({"command": command, "date": machine()["date"], "planned": len(planned), "runs": len(todo)})
    if reexport:
        keys = {run_key(t.prompt, p, steps, s): t for t, p, s in planned}
        row_keys = [run_key(r["prompt"], r["preset"], r["steps"], r["seed"]) for r in rows]
        again = [(i, keys[k]) for i, k in enumerate(row_keys) if k in keys]
        log(f"exporting {len(again)} finished runs again")
        for n, (i, target) in enumerate(again, 1):
            prior = prior if prior is not None else _load_prior(settings)
            rows[i] = reexport_one(prior, target, rows[i], settings)
            log(f"[re-export {n}/{len(again)}] {_one_line(rows[i])}")
            write_results(docs, rows, invocations)
    for i, (target, preset, seed) in enumerate(todo, 1):
        prior = prior if prior is not None else _load_prior(settings)
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


# ---- results --------------------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (steps, preset): accuracy over specified prompts; per (steps, preset, prompt): diversity counts."""
    accuracy, diversity = [], []
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["steps"], r["preset"]), []).append(r)
    for (steps, preset), group in sorted(groups.items(), key=lambda kv: (-kv[0][0], _preset_order(kv[0][1]))):
        spec = [r for r in group if parse_target(r["prompt"]).specified]
        if spec:
            ok = [r for r in spec if r["status"] == "done"]
            hits = [r for r in ok if r["chamfer"] <= CHAMFER_TARGET and r["right_colour"]]
            accuracy.append(
                {
                    "steps": steps,
                    "preset": preset,
                    "prompts": len(spec),
                    "failed": len(spec) - len(ok),
                    "chamfer_mean": _mean([r["chamfer"] for r in ok]),
                    "chamfer_median": float(np.median([r["chamfer"] for r in ok])) if ok else None,
                    "within_target": sum(r["chamfer"] <= CHAMFER_TARGET for r in ok),
                    "right_colour": sum(bool(r["right_colour"]) for r in ok),
                    "right_shape": sum(bool(r["right_shape"]) for r in ok),
                    "both": len(hits),
                    "colour_error_mean": _mean([r["colour_error"] for r in ok]),
                    "wall_mean": _mean([r["wall_seconds"] for r in ok]),
                    "wall_max": max((r["wall_seconds"] for r in ok), default=None),
                    "cpu_mean": _mean([r["cpu_seconds"] for r in ok]),
                }
            )
        by_prompt: dict[str, list[dict[str, Any]]] = {}
        for r in group:
            if not parse_target(r["prompt"]).specified:
                by_prompt.setdefault(r["prompt"], []).append(r)
        for prompt, runs in by_prompt.items():
            ok = [r for r in runs if r["status"] == "done"]
            diversity.append(
                {
                    "steps": steps,
                    "preset": preset,
                    "prompt": prompt,
                    "seeds": len(runs),
                    "failed": len(runs) - len(ok),
                    "shapes": dict(Counter(r["shape_pred"] for r in ok)),
                    "colours": dict(Counter(r["colour_pred"] for r in ok)),
                    "distinct_shapes": len({r["shape_pred"] for r in ok}),
                    "distinct_colours": len({r["colour_pred"] for r in ok}),
                    "wall_mean": _mean([r["wall_seconds"] for r in ok]),
                }
            )
    return {"accuracy": accuracy, "diversity": diversity, "comparison": compare(rows)}


def _preset_order(preset: str) -> int:
    return PRESETS.index(preset) if preset in PRESETS else len(PRESETS)


def compare(rows: list[dict[str, Any]]) -> list[str]:
    """Per step budget and uni-* preset: on how many shared prompts it beats sds and vsd (Chamfer, colour error)."""
    lines = []
    done = [r for r in rows if r["status"] == "done" and parse_target(r["prompt"]).specified]
    for steps in sorted({r["steps"] for r in done}, reverse=True):
        table = {(r["preset"], r["prompt"]): r for r in done if r["steps"] == steps}
        presets = sorted({p for p, _ in table}, key=_preset_order)
        for uni in [p for p in presets if p.startswith("uni-")]:
            for base in [p for p in ("sds", "vsd") if p in presets]:
                shared = sorted({q for p, q in table if p == uni} & {q for p, q in table if p == base})
                if not shared:
                    continue
                cd = sum(table[(uni, q)]["chamfer"] < table[(base, q)]["chamfer"] for q in shared)
                ce = sum(table[(uni, q)]["colour_error"] < table[(base, q)]["colour_error"] for q in shared)
                mu = _mean([table[(uni, q)]["chamfer"] for q in shared])
                mb = _mean([table[(base, q)]["chamfer"] for q in shared])
                lines.append(
                    f"{steps} steps: {uni} vs {base} on {len(shared)} prompts: lower Chamfer on {cd} "
                    f"(mean {mu:.3f} vs {mb:.3f}), lower colour error on {ce}"
                )
    return lines


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _section(
    rows: list[dict[str, Any]], summary: dict[str, Any], info: dict[str, Any], invocations: list[dict[str, Any]]
) -> str:
    done = [r for r in rows if r["status"] == "done"]
    loads = [r["load_average_1min"] for r in done if r.get("load_average_1min") is not None]
    lines = [
        BEGIN,
        "## Text to 3D on the embedded prior (`uni3d bench shapes`)",
        "",
        f"`uni3d bench shapes` on {info['cpu']} ({info['cores']} cores, {info['torch_threads']} torch threads), "
        f"torch {info['torch']}, last written {info['date']}. {len(rows)} runs ({len(rows) - len(done)} failed); "
        f"load average during the runs {_fmt(min(loads, default=None), '.1f')}-{_fmt(max(loads, default=None), '.1f')} "
        "(a shared machine: wall seconds are inflated, CPU seconds are the process's own). Chamfer: symmetric mean "
        "surface distance to the true primitive over its bounding-box diagonal, minimised over turns about the "
        f"vertical axis; colour: area-weighted mean vertex albedo, right when its nearest named colour is the "
        f"prompt's; colour error: mean RGB distance of the surface to the named albedo. Target (issue 5, default "
        f"preset): Chamfer <= {CHAMFER_TARGET:.0%} and right colour on >= {PROMPT_TARGET} of 10 prompts, "
        f"<= {SECONDS_TARGET / 60:.0f} min per prompt.",
        *_commands(invocations),
        "",
        "### Per preset",
        "",
        "| steps | preset | prompts | Chamfer mean | median | <= 5% | right colour | right shape | both | colour err "
        "| wall s mean / max | CPU s mean |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *[
            f"| {a['steps']} | {a['preset']} | {a['prompts']}{' (' + str(a['failed']) + ' failed)' if a['failed'] else ''} "
            f"| {_fmt(a['chamfer_mean'])} | {_fmt(a['chamfer_median'])} | {a['within_target']} | {a['right_colour']} "
            f"| {a['right_shape']} | {a['both']} | {_fmt(a['colour_error_mean'])} "
            f"| {_fmt(a['wall_mean'], '.0f')} / {_fmt(a['wall_max'], '.0f')} | {_fmt(a['cpu_mean'], '.0f')} |"
            for a in summary["accuracy"]
        ],
        "",
        "### Per prompt",
        "",
        "| steps | preset | prompt | Chamfer | shape | colour | colour err | wall s | CPU s | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *[_prompt_row(r) for r in _sorted_rows(rows) if parse_target(r["prompt"]).specified],
    ]
    if summary["diversity"]:
        lines += [
            "",
            "### Diversity (under-specified prompts)",
            "",
            "| steps | preset | prompt | seeds | distinct shapes | distinct colours | shapes | colours |",
            "|---|---|---|---|---|---|---|---|",
            *[
                f"| {d['steps']} | {d['preset']} | {d['prompt']} | {d['seeds']} | {d['distinct_shapes']} "
                f"| {d['distinct_colours']} | {_counts(d['shapes'])} | {_counts(d['colours'])} |"
                for d in summary["diversity"]
            ],
        ]
    lines += ["", *_target_verdict(summary["accuracy"]), "", _chamfer_scale()]
    if summary["comparison"]:
        lines += ["", "### uni-* against sds and vsd (same prompts, same step budget)", ""]
        lines += [f"- {line}" for line in summary["comparison"]]
    lines += ["", "Contact sheet: [shapes/contact_sheet.png](benchmarks/shapes/contact_sheet.png).", END]
    return "\n".join(lines)


def _commands(invocations: list[dict[str, Any]]) -> list[str]:
    if not invocations:
        return []
    head = ["", "Commands run (each resumes the json: runs already there are skipped):", ""]
    return head + [
        f"- `{i['command']}` ({i['date']}: {i.get('planned', '?')} runs planned, {i['runs']} not done yet at its "
        f"start){'; ' + i['note'] if i.get('note') else ''}"
        for i in invocations
    ]


def _target_verdict(accuracy: list[dict[str, Any]]) -> list[str]:
    """Issue 5's target, judged on the default preset at the default step budget from the measured rows."""
    default = GenerateConfig(prompt="x")
    rows = [a for a in accuracy if a["preset"] == default.preset and a["steps"] == default.steps]
    if not rows:
        return [f"Target: not judged yet (no run of the default preset {default.preset} at {default.steps} steps)."]
    a = rows[0]
    quality = a["both"] >= PROMPT_TARGET
    wall = a["wall_max"] is not None and a["wall_max"] <= SECONDS_TARGET
    cpu = a["cpu_mean"] is not None and a["cpu_mean"] <= SECONDS_TARGET
    return [
        f"**Target** ({default.preset}, {default.steps} steps, {a['prompts']} prompts): Chamfer <= "
        f"{CHAMFER_TARGET:.0%} and right colour on {a['both']} (needs >= {PROMPT_TARGET} of 10): "
        f"{'met' if quality else 'NOT met'}; Chamfer alone on {a['within_target']}, colour alone on "
        f"{a['right_colour']}. Time: longest wall {_fmt(a['wall_max'], '.0f')} s "
        f"({'within' if wall else 'over'} {SECONDS_TARGET:.0f} s on this shared machine), mean CPU "
        f"{_fmt(a['cpu_mean'], '.0f')} s ({'within' if cpu else 'over'} {SECONDS_TARGET:.0f} s)."
    ]


@functools.cache
def _chamfer_scale() -> str:
    """How big Chamfer numbers are: the sampling floor (the true cube against itself) and sphere vs cube."""
    floor = shape_chamfer(primitive_mesh("cube"), "cube")
    sphere = shape_chamfer(primitive_mesh("sphere"), "cube")
    cone = shape_chamfer(primitive_mesh("cone"), "cube")
    return (
        f"Scale of the Chamfer numbers: the true cube scores {floor:.3f} against itself (sampling floor), the "
        f"true sphere {sphere:.3f} and the true cone {cone:.3f} against the cube; so <= {CHAMFER_TARGET:.0%} "
        "does not by itself separate a sphere from a cube, which the 'right shape' column (nearest primitive) does."
    )


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def _sorted_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (-r["steps"], _preset_order(r["preset"]), r["prompt"], r["seed"]))


def _prompt_row(r: dict[str, Any]) -> str:
    if r["status"] != "done":
        return f"| {r['steps']} | {r['preset']} | {r['prompt']} | failed: {r['error'][:80]} | | | | | | |"
    ok = "" if r["chamfer"] <= CHAMFER_TARGET else " ✗"
    colour = r["colour_pred"] + ("" if r["right_colour"] else " ✗")
    return (
        f"| {r['steps']} | {r['preset']} | {r['prompt']} | {r['chamfer']:.3f}{ok} | {r['shape_pred']} | {colour} "
        f"| {r['colour_error']:.3f} | {r['wall_seconds']:.0f} | {r['cpu_seconds']:.0f} | {r['load_average_1min']} |"
    )


def run_groups(rows: list[dict[str, Any]]) -> dict[tuple[int, str], list[dict[str, Any]]]:
    """Finished runs grouped by (steps, preset), in the tables' order (the contact sheet's rows)."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in _sorted_rows([r for r in rows if r["status"] == "done"]):
        groups.setdefault((r["steps"], r["preset"]), []).append(r)
    return groups


def write_results(docs: Path, rows: list[dict[str, Any]], invocations: list[dict[str, Any]] | None = None) -> None:
    """``docs/benchmarks/shapes.json``, the docs section and ``docs/benchmarks/shapes/contact_sheet.png``."""
    import imageio.v3 as iio

    info = machine()
    summary = summarise(rows)
    invocations = invocations or []
    data = {"machine": info, "invocations": invocations, "summary": summary, "rows": rows}
    save_json(docs / "benchmarks" / "shapes.json", data)
    replace_section(docs / "benchmarks.md", _section(rows, summary, info, invocations))
    sheet = contact_sheet_image(run_groups(rows))
    if sheet is not None:
        atomic_write(
            docs / "benchmarks" / "shapes" / "contact_sheet.png", iio.imwrite("<bytes>", sheet, extension=".png")
        )


# ---- command line ---------------------------------------------------------------------------------------------


def add_commands(bench_subparsers: argparse._SubParsersAction) -> None:
    """Register ``shapes`` on the ``uni3d bench`` subparsers."""
    p = bench_subparsers.add_parser("shapes", help="text to 3D on the embedded prior: Chamfer, colour, diversity")
    p.add_argument("--prompts", type=Path, default=Path("prompts/shapes.txt"), help="prompt file")
    p.add_argument("--presets", default=",".join(PRESETS), help=f"comma-separated (default {','.join(PRESETS)})")
    p.add_argument("--steps", type=int, default=None, help="steps per run (default: the generate default)")
    p.add_argument("--seeds", type=int, default=8, help="seeds per under-specified prompt and preset (default 8)")
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
    p.set_defaults(func=_bench_shapes)


def _bench_shapes(args: argparse.Namespace) -> int:
    settings: dict[str, Any] = read_config_file(args.config) if args.config else {}
    if args.steps is not None:
        settings["steps"] = args.steps
    GenerateConfig.from_dict({**settings, "prompt": "check"})  # a bad setting fails here, before any run
    prompts = [p.prompt for p in read_prompts(args.prompts)]
    if args.only != "all":
        prompts = [p for p in prompts if parse_target(p).specified == (args.only == "accuracy")]
    prompts = prompts[: args.limit]
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    for preset in presets:
        GenerateConfig(prompt="check", preset=preset)  # unknown presets: a one-line error now
    command = "uni3d " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    run_bench(prompts, presets, settings, args.seeds, args.out, args.docs, command=command, reexport=args.reexport)
    return 0
