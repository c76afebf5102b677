"""``uni3d bench coverage``: does text to 3D sample the prior's distribution for under-specified prompts, or its mode?

An outcome is what the shape-and-colour classifier (:mod:`uni3d.tasks.embedded_prior.classifier`) calls an image:
``(shape, colour)``. The prior's answer to an under-specified prompt ("a red object") is the distribution of the
outcomes of its DDIM samples at the cameras, view words and guidance the text-to-3D pipeline uses; a preset's answer
is the distribution of its 3D outcomes. The null of their distance is what ``n`` draws from the prior's own samples
give against all of them: a preset whose distance lies inside it cannot be told from sampling the prior.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shlex
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import torch
import trimesh

from uni3d.bench.common import machine, replace_section, section_markers
from uni3d.cli.commands import BENCHMARKS
from uni3d.config import read_config_file
from uni3d.errors import UsageError
from uni3d.export.raster import rasterize_trimesh
from uni3d.io import atomic_write, save_json
from uni3d.models.views import load_view_scheme
from uni3d.models.vocabulary import COLOUR_NAMES, SHAPE_NAMES
from uni3d.paths import ASSETS
from uni3d.scene.cameras import Cameras, CameraSampler
from uni3d.tasks.embedded_prior.classifier import ShapeClassifier, load_classifier
from uni3d.tasks.embedded_prior.composites import LAYOUTS
from uni3d.tasks.text_to_3d.batch import read_prompts
from uni3d.tasks.text_to_3d.config import GenerateConfig
from uni3d.tasks.text_to_3d.distillers import get_distiller

Outcome = tuple[str, ...]
"""``(shape, colour)`` as the classifier names them; with a parts judge, a composite's is ``(layout, shape, colour,
shape, colour)`` ("stack", "cube", "red", "sphere", "blue")."""


def distribution(outcomes: Sequence[Outcome]) -> dict[Outcome, float]:
    """The share of each outcome."""
    counts = Counter(outcomes)
    return {o: c / len(outcomes) for o, c in counts.items()}


def total_variation(p: dict[Outcome, float], q: dict[Outcome, float]) -> float:
    """``1/2 sum |p - q|`` over the outcomes of either: 0 for equal distributions, 1 for disjoint ones."""
    return 0.5 * sum(abs(p.get(o, 0.0) - q.get(o, 0.0)) for o in set(p) | set(q))


def null_tv(reference: Sequence[Outcome], n: int, *, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """``(mean, 95th percentile)`` of the distance between ``n`` draws (with replacement) from ``reference`` and
    ``reference`` itself, over ``resamples`` resamplings: what a method that samples the prior exactly would score
    with ``n`` outcomes."""
    rng = np.random.default_rng(seed)
    full = distribution(reference)
    picks = rng.integers(0, len(reference), size=(resamples, n))
    tvs = np.array([total_variation(distribution([reference[i] for i in row]), full) for row in picks])
    return float(tvs.mean()), float(np.percentile(tvs, 95))


def pipeline_cameras(cfg: GenerateConfig, n: int, size: int, seed: int) -> Cameras:
    """``n`` cameras of the 3D pipeline's ranges in ``cfg``, drawn from their own ``seed`` (the global random
    stream is left as it was)."""
    sampler = CameraSampler(cfg.elevation_deg, cfg.azimuth_deg, cfg.distance, cfg.fov_deg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return sampler.sample(n, size)


def asset_outcome(
    folder: str | Path, judge: ShapeClassifier, *, cfg: GenerateConfig, views: int = 8, seed: int = 0
) -> Outcome:
    """What the classifier calls an exported asset: its vertex-colour mesh (``model_vertex_color.glb`` in
    ``folder``) rasterized at the classifier's 32 px from ``views`` cameras of the 3D pipeline's ranges, on white,
    each view classified, the most frequent shape and colour kept (with a parts judge, the most frequent outcome).
    The colour is read off renders, not averaged over the surface (an average calls a red-and-blue cube grey)."""
    mesh = trimesh.load(Path(folder) / "model_vertex_color.glb", force="mesh")
    rgb, alpha = rasterize_trimesh(pipeline_cameras(cfg, views, 32, seed), mesh)
    images = (rgb + (1 - alpha)).clamp(0, 1).permute(0, 3, 1, 2)
    if not judge.parts:  # the shape and the colour each by its own majority
        shape, colour = judge.predict(images)
        return SHAPE_NAMES[int(shape.mode().values)], COLOUR_NAMES[int(colour.mode().values)]
    return Counter(judge_outcomes(judge, images)).most_common(1)[0][0]


def prior_outcomes(
    prior: str | Path,
    judge: ShapeClassifier,
    prompt: str,
    n: int,
    *,
    cfg: GenerateConfig,
    steps: int = 25,
    seed: int = 0,
) -> list[Outcome]:
    """``n`` outcomes of the prior's DDIM samples (``steps`` steps) for ``prompt`` at cameras drawn by the 3D
    pipeline's sampler with ``cfg``'s ranges, worded in the prior's view scheme, at ``cfg``'s guidance."""
    from uni3d.models.sampling import sample_images  # diffusers: imported only when the benchmark runs
    from uni3d.tasks.embedded_prior.evaluate import load_pipeline

    pipe = load_pipeline(prior)
    cams = pipeline_cameras(cfg, n, 8, seed)
    views = load_view_scheme(prior)
    prompts = views.prompts(prompt, cams) if cfg.view_dependent else [prompt] * n
    images = torch.cat(
        [sample_images(pipe, prompts[i : i + 64], steps, cfg.guidance_scale, seed + i) for i in range(0, n, 64)]
    )
    return judge_outcomes(judge, images)


def judge_outcomes(judge: ShapeClassifier, images: torch.Tensor) -> list[Outcome]:
    """The outcome of each image ``(B, 3, 32, 32)`` (see :data:`Outcome`): a parts judge names both parts of what
    it calls a composite, so open composite prompts ("a sphere with a nose") are counted by parts and colours."""
    heads = {name: v.tolist() for name, v in judge.predict_all(images).items()}
    out: list[Outcome] = []
    for i, (shape, colour) in enumerate(zip(heads["shape"], heads["colour"], strict=True)):
        layout = LAYOUTS[heads["layout"][i]] if judge.parts else "single"
        if layout == "single":
            out.append((SHAPE_NAMES[shape], COLOUR_NAMES[colour]))
            continue
        second = heads["shape1"][i], heads["colour1"][i]
        names = tuple(
            names[k] if k < len(names) else "none" for names, k in ((SHAPE_NAMES, second[0]), (COLOUR_NAMES, second[1]))
        )
        out.append((layout, SHAPE_NAMES[shape], COLOUR_NAMES[colour], *names))
    return out


BEGIN, END = section_markers("coverage")
DEFAULT_PRESETS = ("sds", "vsd", "uni-jeffreys")


def add_commands(bench_subparsers: argparse._SubParsersAction) -> None:
    """Register ``coverage`` on the ``uni3d bench`` subparsers."""
    p = bench_subparsers.add_parser("coverage", help=BENCHMARKS["coverage"].help)
    p.add_argument("--prompts", type=Path, default=Path("prompts/coverage.txt"), help="prompt file")
    p.add_argument("--presets", default=",".join(DEFAULT_PRESETS), help="comma-separated presets")
    p.add_argument("--particles", type=int, default=8, help="particles per run (default 8)")
    p.add_argument("--seeds", type=int, default=2, help="runs per prompt and preset, seeds 0.. (default 2)")
    p.add_argument("--prior-samples", type=int, default=128, help="prior samples per prompt (default 128)")
    p.add_argument("--steps", type=int, default=None, help="steps per run (default: the generate default)")
    p.add_argument("--config", type=Path, default=None, help="YAML/JSON generate settings for every run")
    p.add_argument("--classifier", type=Path, default=ASSETS / "priors" / "shapes-classifier.pt", help="the judge")
    p.add_argument("--out", type=Path, default=Path("runs/bench-coverage"), help="run folders")
    p.add_argument("--docs", type=Path, default=Path("docs"), help="docs folder to write into (default docs)")
    p.set_defaults(func=_bench_coverage)


def _bench_coverage(args: argparse.Namespace) -> int:
    settings: dict[str, Any] = read_config_file(args.config, "generate") if args.config else {}
    if args.steps is not None:
        settings["steps"] = args.steps
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    checked = [
        GenerateConfig.from_dict({**settings, "prompt": "check", "preset": preset, "particles": args.particles})
        for preset in presets
    ]  # unknown presets, or settings a preset cannot take: a one-line error now
    if not checked:
        raise UsageError("--presets names no preset")
    base = checked[0]
    if min(args.seeds, args.prior_samples) < 1:
        raise UsageError(f"--seeds and --prior-samples must be >= 1, got {args.seeds} and {args.prior_samples}")
    prompts = [p.prompt for p in read_prompts(args.prompts)]
    rows = run_coverage(prompts, presets, base, seeds=args.seeds, prior_samples=args.prior_samples,
                        classifier=args.classifier, out=args.out, docs=args.docs, settings=settings)  # fmt: skip
    command = "uni3d " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    write_results(args.docs, rows, {"command": command, "machine": machine(), "prior_samples": args.prior_samples})
    for r in rows:
        print(f"{r['prompt']:<16} {r['preset']:<14} TV {r['tv']:.3f} (null {r['null_mean']:.3f}, 95% {r['null_p95']:.3f})"
              f"  {r['distinct']} distinct of {r['outcomes']}  {r['cpu_per_outcome']:.0f} CPU s/outcome")  # fmt: skip
    return 0


def run_coverage(
    prompts: Sequence[str],
    presets: Sequence[str],
    base: GenerateConfig,
    *,
    seeds: int,
    prior_samples: int,
    classifier: Path,
    out: Path,
    docs: Path,
    settings: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One row per prompt and preset: the 3D outcomes (particles x seeds), their distance to the prior's own
    outcomes and its null, distinct outcomes, CPU seconds per outcome; a contact sheet per row in ``docs``.
    ``settings`` are the ``--config`` settings the runs were given; each row is labelled with them
    (:func:`settings_label`) and runs of another label get their own folders (named by the label's hash)."""
    from uni3d.tasks.text_to_3d.run import generate  # diffusers: imported only when the benchmark runs

    judge, _ = load_classifier(classifier)
    sampling = sampling_label(base)
    rows = []
    for prompt in prompts:
        reference = prior_outcomes(base.prior_path, judge, prompt, prior_samples, cfg=base)
        for preset in presets:
            label = settings_label(settings or {}, dataclasses.replace(base, preset=preset))
            group = sampling if not label else f"{sampling}-{hashlib.sha1(label.encode()).hexdigest()[:8]}"
            outcomes, cpu, sheets = [], 0.0, []
            for seed in range(seeds):
                cfg = dataclasses.replace(base, prompt=prompt, preset=preset, seed=seed)
                folder = out / group / preset / _slug(prompt) / f"seed-{seed}"
                ran_before = (folder / "metrics.json").is_file()
                t0 = time.process_time()
                metrics = generate(cfg, folder, progress=sys.stderr.isatty())
                cpu += _run_cpu(folder, time.process_time() - t0, ran_before)
                assets = [folder / f"particle-{p['particle']}" for p in metrics.get("particles") or []] or [folder]
                outcomes += [asset_outcome(a, judge, cfg=cfg) for a in assets]
                sheets.append(folder / ("contact_sheet.png" if len(assets) > 1 else "preview.png"))
            null_mean, null_p95 = null_tv(reference, len(outcomes))
            tv = total_variation(distribution(outcomes), distribution(reference))
            sheet = docs / "benchmarks" / "coverage" / f"{preset}-{group}-{_slug(prompt)}.png"
            _stack(sheets, sheet)
            rows.append({
                "prompt": prompt, "preset": preset, "sampling": sampling, "settings": label, "outcomes": len(outcomes),
                "tv": tv,
                "null_mean": null_mean, "null_p95": null_p95, "inside_null": tv <= null_p95, "distinct": len(set(outcomes)),
                "cpu_per_outcome": cpu / len(outcomes), "outcome_counts": _counts(outcomes),
                "prior_counts": _counts(reference), "sheet": str(sheet.relative_to(docs)),
            })  # fmt: skip
    return rows


def sampling_label(cfg: GenerateConfig) -> str:
    """How a run draws its noise and timesteps, e.g. ``fresh-uniform``, ``seeded-descending`` or, for a preset with
    its own noise, that noise's name (``consistent-descending`` for cfd)."""
    own = get_distiller(cfg.preset)
    noise = own.noise if own is not None and own.noise != "run" else cfg.resolved_noise()
    return f"{noise}-{cfg.resolved_t_schedule()}"


def settings_label(settings: dict[str, Any], cfg: GenerateConfig | None = None) -> str:
    """The ``--config`` settings a row was measured with, as ``key: value`` pairs (a prior by its folder's name),
    except those the sampling column shows: so that rows of the same preset and sampling under other settings (a
    fake-score schedule, another prior) are told apart instead of replacing each other. For a preset with a learned
    fake score (``cfg``), its resolved ``fake_estimator`` is always named: its default depends on the particles."""
    shown = {"noise", "t_schedule", "particles"}
    if cfg is not None and cfg.has_fake_estimator:
        settings = {**settings, "fake_estimator": cfg.resolved_fake_estimator()}

    def shown_as(key: str, value: Any) -> Any:
        if key == "prior":
            return Path(str(value)).name
        return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value

    return ", ".join(f"{k}: {shown_as(k, v)}" for k, v in sorted(settings.items()) if k not in shown)


def _slug(prompt: str) -> str:
    return "-".join(prompt.lower().split())


def _counts(outcomes: Sequence[Outcome]) -> dict[str, int]:
    return {" ".join(outcome): n for outcome, n in Counter(outcomes).most_common()}


def _run_cpu(folder: Path, measured: float, ran_before: bool) -> float:
    """The run's CPU seconds: those recorded when it ran, for a run finished before this call (``generate`` returns
    it without running it again), else ``measured`` (recorded for next time)."""
    record = folder / "coverage_cpu.json"
    if ran_before and record.is_file():
        return float(json.loads(record.read_text())["cpu_seconds"])
    save_json(record, {"cpu_seconds": measured})
    return measured


def _stack(images: Sequence[Path], path: Path) -> None:
    """The runs' contact sheets one under another, as one PNG."""
    tiles = [iio.imread(p)[..., :3] for p in images if p.is_file()]
    if tiles:
        width = max(t.shape[1] for t in tiles)
        padded = [np.pad(t, ((0, 0), (0, width - t.shape[1]), (0, 0)), constant_values=255) for t in tiles]
        atomic_write(path, iio.imwrite("<bytes>", np.concatenate(padded), extension=".png"))


def _key(row: dict[str, Any]) -> tuple[str, str, str, str]:
    return row["prompt"], row["preset"], row["sampling"], row.get("settings", "")


def write_results(docs: Path, rows: list[dict[str, Any]], info: dict[str, Any]) -> None:
    """``docs/benchmarks/coverage.json`` and the ``coverage`` section of ``docs/benchmarks.md``: ``rows`` (each
    with ``info``'s command and machine) replace the earlier rows of the same prompt, preset, sampling and settings,
    the others are kept, so presets may be measured by separate invocations."""
    path = docs / "benchmarks" / "coverage.json"
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    # rows written before rows kept their own sampling, command and machine: the file's, and fresh noise
    legacy = {"sampling": "fresh-uniform", "command": earlier.get("command"), "machine": earlier.get("machine")}
    new = [{**r, "command": info["command"], "machine": info["machine"]} for r in rows]
    keys = {_key(r) for r in new}
    kept = [row for row in ({**legacy, **r} for r in earlier.get("rows", [])) if _key(row) not in keys]
    rows = sorted(kept + new, key=lambda r: (r["prompt"], r["sampling"], r["preset"], r.get("settings", "")))
    save_json(path, {**info, "rows": rows})
    m = info["machine"]
    lines = [
        BEGIN,
        "## Coverage: open prompts against the prior's own answers",
        "",
        f"Latest: `{info['command']}` on {m['cpu']} ({m['cores']} cores), torch {m['torch']}, {m['date']} (each row's "
        "command and machine are in the JSON). Sampling: the runs' noise (`fresh` every step, or `seeded` per "
        "particle) and timestep schedule (`uniform`, or `descending` over the run). Outcome: the shipped "
        f"classifier's (shape, colour) of a render; the prior's answer: {info['prior_samples']} DDIM samples at the "
        "3D pipeline's cameras, view words and guidance; a 3D outcome: the majority over 8 renders of each exported "
        "particle. TV: total-variation distance to the prior's answer; null: the TV of as many draws from the prior's "
        "own samples (mean, 95th percentile). Settings: what the run's `--config` changed beyond the sampling "
        "(`-`: the defaults). Numbers: `docs/benchmarks/coverage.json`.",
        "",
        "| prompt | preset | sampling | settings | outcomes | TV | null mean | null 95% | inside null | distinct "
        "| CPU s / outcome | picture |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *[
            f"| {r['prompt']} | {r['preset']} | {r['sampling']} | {r.get('settings') or '-'} | {r['outcomes']} | "
            f"{r['tv']:.3f} | {r['null_mean']:.3f} | "
            f"{r['null_p95']:.3f} | {'yes' if r['inside_null'] else 'no'} | {r['distinct']} | "
            f"{r['cpu_per_outcome']:.0f} | [sheet]({r['sheet']}) |"
            for r in rows
        ],
        END,
    ]
    replace_section(docs / "benchmarks.md", "\n".join(lines))
