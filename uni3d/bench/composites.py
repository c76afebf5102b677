"""``uni3d bench composites``: text to 3D of two-part prompts, scored against the true union; the Janus rate.

Each prompt of the prompt file names a composite (:func:`uni3d.bench.composite_metrics.parse_composite`: "a red cube
on top of a blue sphere", "a blue sphere with a red cone nose"); the default file holds the combinations the
composite prior never saw (:func:`~uni3d.tasks.embedded_prior.composites.held_out_combinations`). Per prompt and
preset, ``--seeds`` seeds with the default settings are scored (:func:`score_composite`: Chamfer, every part
present in its colour, the named shapes nearest, the relation; right when all hold and the Chamfer is within
:data:`~uni3d.bench.composite_metrics.CHAMFER_RIGHT` of the diagonal). The
prompts with a front (a nose, a handle, a knob) are also run ``--janus-seeds`` times with view-dependent prompting
on and off, and each outcome's marker regions counted: the Janus rate is the share with more than one.

Every finished run is written at once to ``docs/benchmarks/composites.json`` and the ``<!-- composites:begin -->``
section of ``docs/benchmarks.md``; a rerun skips the runs already there, so a killed benchmark resumes.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uni3d.bench.common import machine, previous_rows, replace_section, section_markers
from uni3d.bench.composite_metrics import CompositeTarget, parse_composite, score_composite
from uni3d.bench.shapes import load_settings_prior, run_one, settings_label
from uni3d.cli.commands import BENCHMARKS
from uni3d.config import read_config_file
from uni3d.errors import UsageError
from uni3d.io import save_json
from uni3d.tasks.text_to_3d.batch import read_prompts, run_folder
from uni3d.tasks.text_to_3d.config import GenerateConfig

DEFAULT_PROMPTS = Path("prompts/composites.txt")


def plan(
    targets: list[CompositeTarget], presets: list[str], *, seeds: int, janus_seeds: int
) -> list[tuple[CompositeTarget, str, int, bool]]:
    """Runs in order ``(target, preset, seed, view_dependent)``: per preset the accuracy runs (seed by seed,
    view-dependent prompting on), then the Janus runs of the targets with a front (both settings, seed by seed; an
    accuracy run is also the Janus run of its seed)."""
    runs: dict[tuple[str, str, int, bool], tuple[CompositeTarget, str, int, bool]] = {}
    for preset in presets:
        for s in range(seeds):
            runs.update({(t.prompt, preset, s, True): (t, preset, s, True) for t in targets})
        fronts = [t for t in targets if t.composite.layout == "front"]
        for s in range(janus_seeds):
            for vd in (True, False):
                runs.update(
                    {
                        (t.prompt, preset, s, vd): (t, preset, s, vd)
                        for t in fronts
                        if (t.prompt, preset, s, vd) not in runs
                    }
                )
    return list(runs.values())


def run_key(prompt: str, preset: str, seed: int, *, view_dependent: bool, steps: int, settings: str) -> str:
    """A row's identity (an accuracy run with seed ``s`` is the Janus run with the same seed and settings)."""
    return f"{prompt}|{preset}|{seed}|{'vd' if view_dependent else 'no-vd'}|{steps}|{settings}"


def _row_key(row: dict[str, Any]) -> str:
    return run_key(
        row["prompt"],
        row["preset"],
        row["seed"],
        view_dependent=row["view_dependent"],
        steps=row["steps"],
        settings=row["settings"],
    )


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson interval of a rate ``k / n`` (``(0, 1)`` for ``n = 0``)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise(rows: list[dict[str, Any]], *, seeds: int, janus_seeds: int) -> dict[str, Any]:
    """Per preset and settings (steps, the settings label): right prompts, parts, shapes and relation right, mean
    Chamfer and CPU s of the accuracy runs (seeds below ``seeds``, view words on); per preset, settings and
    view-dependent setting: the Janus count over the front runs with seeds below ``janus_seeds``."""
    done = [r for r in rows if r.get("status") == "done"]
    out: dict[str, Any] = {"accuracy": {}, "janus": {}}
    groups = sorted({(r["preset"], r["steps"], r["settings"]) for r in done})
    for preset, steps, settings in groups:
        mine = [r for r in done if (r["preset"], r["steps"], r["settings"]) == (preset, steps, settings)]
        name = f"{preset}|{steps}|{settings}"
        acc = [r for r in mine if r["view_dependent"] and r["seed"] < seeds]
        if acc:
            out["accuracy"][name] = {
                "right": sum(r["right"] for r in acc),
                "right_shapes": sum(r["right_shapes"] for r in acc),
                "parts_right": sum(r["parts_right"] for r in acc),
                "relation_right": sum(bool(r["relation_right"]) for r in acc),
                "runs": len(acc),
                "chamfer": sum(r["chamfer"] for r in acc) / len(acc),
                "cpu_seconds": sum(r["cpu_seconds"] for r in acc) / len(acc),
            }
        for vd in (True, False):
            fronts = [r for r in mine if r["view_dependent"] == vd and "janus" in r and r["seed"] < janus_seeds]
            if fronts:
                k = sum(r["janus"] for r in fronts)
                found = sum(r["marker_regions"] >= 1 for r in fronts)
                towards = sum(r["front_azimuth_deg"] is not None and abs(r["front_azimuth_deg"]) <= 45 for r in fronts)
                out["janus"][f"{name}|{'on' if vd else 'off'}"] = {
                    "janus": k,
                    "runs": len(fronts),
                    "ci95": list(wilson(k, len(fronts))),
                    "marker_found": found,
                    "front_at_front": towards,
                }
    return out


def markdown(summary: dict[str, Any], invocations: list[dict[str, Any]]) -> str:
    """The ``composites`` section of ``docs/benchmarks.md``."""
    begin, end = section_markers("composites")
    lines = [begin, "## Composites: two-part prompts in 3D, and the Janus rate", ""]
    for inv in invocations:
        lines.append(f"`{inv['command']}` on {inv['cpu']}, {inv['date']}.")
    lines += [
        "",
        "Right: Chamfer to the true union within 5% of its diagonal (minimised over turns about the vertical), the "
        "named pair of shapes the nearest of all pairs in the layout, both parts covered and in their named colours, "
        "and the relation (on top of, beside, a marker off the body's side) read from the colours. Raw rows: "
        "`docs/benchmarks/composites.json`.",
        "",
        "| preset | steps | settings | right | shapes right | parts right | relation right | mean Chamfer | CPU s per run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary["accuracy"].items():
        preset, steps, settings = name.split("|")
        n = s["runs"]
        lines.append(
            f"| `{preset}` | {steps} | {settings or 'defaults'} | {s['right']} / {n} | {s['right_shapes']} / {n} | "
            f"{s['parts_right']} / {n} | {s['relation_right']} / {n} | {s['chamfer']:.3f} | {s['cpu_seconds']:.0f} |"
        )
    if summary["janus"]:
        lines += [
            "",
            "Janus rate: outcomes whose marker-coloured regions (each at least a fifth of the true marker's area) face "
            "more than one way (azimuths over 90 degrees apart), over the prompts with a front and their seeds; the "
            "null (the true objects) is 0. `marker found`: outcomes with at least one region; `front at front`: its "
            "largest region within 45 degrees of the view words' front.",
            "",
            "| preset | steps | settings | view-dependent prompting | Janus | rate (95% interval) | marker found "
            "| front at front |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for key, s in summary["janus"].items():
            preset, steps, settings, vd = key.split("|")
            lo, hi = s["ci95"]
            n = s["runs"]
            lines.append(
                f"| `{preset}` | {steps} | {settings or 'defaults'} | {vd} | {s['janus']} / {n} | "
                f"{s['janus'] / n:.0%} ({lo:.0%}-{hi:.0%}) | {s['marker_found']} / {n} | {s['front_at_front']} / {n} |"
            )
    return "\n".join([*lines, end])


def write_results(
    docs: Path, rows: list[dict[str, Any]], invocations: list[dict[str, Any]], *, seeds: int, janus_seeds: int
) -> None:
    """``docs/benchmarks/composites.json`` and the docs section (summarised over ``seeds`` and ``janus_seeds``)."""
    summary = summarise(rows, seeds=seeds, janus_seeds=janus_seeds)
    save_json(docs / "benchmarks" / "composites.json", {"invocations": invocations, "summary": summary, "rows": rows})
    replace_section(docs / "benchmarks.md", markdown(summary, invocations))


def run_bench(
    targets: list[CompositeTarget],
    presets: list[str],
    settings: dict[str, Any],
    *,
    seeds: int,
    janus_seeds: int,
    out: Path,
    docs: Path,
    prior: Any = None,
    log: Callable[[str], None] = print,
    command: str | None = None,
) -> list[dict[str, Any]]:
    """Run (or resume) the benchmark, rewriting the json and the docs section after every run."""
    json_path = docs / "benchmarks" / "composites.json"
    rows, invocations = previous_rows(json_path)
    label = settings_label(settings)
    steps = GenerateConfig.from_dict({**settings, "prompt": "x"}).steps
    done = {_row_key(r) for r in rows}
    planned = plan(targets, presets, seeds=seeds, janus_seeds=janus_seeds)
    todo = [
        p
        for p in planned
        if run_key(p[0].prompt, p[1], p[2], view_dependent=p[3], steps=steps, settings=label) not in done
    ]
    counts = {"seeds": seeds, "janus_seeds": janus_seeds}
    log(f"{len(todo)} runs to do ({len(planned) - len(todo)} of {len(planned)} already in {json_path})")
    if command is not None:
        now = machine()
        invocations.append({"command": command, "date": now["date"], "cpu": now["cpu"], "runs": len(todo)})
    for i, (target, preset, seed, vd) in enumerate(todo, 1):
        prior = prior if prior is not None else load_settings_prior(settings)
        run_settings = {**settings, "view_dependent": vd}
        name = f"{target.prompt} seed {seed}{'' if vd else ' no-vd'}"
        folder = run_folder(out / preset / f"steps-{steps}", f"{name} {label}" if label else name)
        row = run_one(prior, target, preset, seed, run_settings, folder, score=score_composite)
        row.update(settings=label, view_dependent=vd, layout=target.composite.layout)
        rows.append(row)
        verdict = row.get("right", "failed")
        log(f"[{i}/{len(todo)}] {preset} {target.prompt!r} seed {seed} vd {vd}: right {verdict}")
        write_results(docs, rows, invocations, **counts)
    if not todo:
        write_results(docs, rows, invocations, **counts)
    return rows


def read_targets(path: Path) -> list[CompositeTarget]:
    """The composite prompts of a prompt file; a line naming no composite with every colour is a one-line error."""
    targets = []
    for item in read_prompts(path):
        target = parse_composite(item.prompt)
        if target is None or not target.specified:
            raise UsageError(
                f"{path}: {item.prompt!r} names no composite with both colours (e.g. 'a red cube on top of a blue "
                "sphere', 'a blue sphere with a red cone nose')"
            )
        if target.colours[0] == target.colours[1]:
            raise UsageError(
                f"{path}: {item.prompt!r} gives both parts one colour; the scores tell parts apart by colour"
            )
        targets.append(target)
    return targets


def add_commands(bench_subparsers: argparse._SubParsersAction) -> None:
    """Register ``composites`` on the ``uni3d bench`` subparsers."""
    p = bench_subparsers.add_parser("composites", help=BENCHMARKS["composites"].help)
    p.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS, help=f"prompt file (default {DEFAULT_PROMPTS})")
    p.add_argument("--prior", default=None, help="prior folder (default: the generate default)")
    default = GenerateConfig.from_dict({"prompt": "x"}).preset
    p.add_argument("--presets", default=default, help=f"comma-separated (default {default}, the generate default)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per prompt and preset for accuracy (default 1)")
    p.add_argument("--janus-seeds", type=int, default=8, help="seeds per front prompt and setting (default 8; 0: none)")
    p.add_argument("--steps", type=int, default=None, help="steps per run (default: the generate default)")
    p.add_argument("--config", type=Path, default=None, help="YAML/JSON generate settings for every run")
    p.add_argument("--out", type=Path, default=Path("runs/bench-composites"), help="run folders")
    p.add_argument("--docs", type=Path, default=Path("docs"), help="docs folder to write into (default docs)")
    p.set_defaults(func=_bench_composites)


def _bench_composites(args: argparse.Namespace) -> int:
    settings: dict[str, Any] = read_config_file(args.config, "generate") if args.config else {}
    if args.steps is not None:
        settings["steps"] = args.steps
    if args.prior is not None:
        settings["prior"] = args.prior
    if "view_dependent" in settings:
        raise UsageError("bench composites sets view_dependent itself (on for accuracy, on and off for the Janus rate)")
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    for preset in presets:
        GenerateConfig.from_dict({**settings, "prompt": "check", "preset": preset})  # bad settings: one line now
    if args.seeds < 1 or args.janus_seeds < 0:
        raise UsageError(f"--seeds must be >= 1 and --janus-seeds >= 0, got {args.seeds} and {args.janus_seeds}")
    targets = read_targets(args.prompts)
    command = "uni3d " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    run_bench(
        targets,
        presets,
        settings,
        seeds=args.seeds,
        janus_seeds=args.janus_seeds,
        out=args.out,
        docs=args.docs,
        command=command,
    )
    return 0
