"""``uni3d bench scene``: rays per second (forward + backward) of the scene renderer per backend and size.

Backends: torch eager, torch with ``torch.compile`` on the hash grid, and (where CUDA, tinycudann and nerfacc
exist) the cuda backend. The field is a fresh one (the default blob) with its occupancy grid refreshed, rendered
from random cameras; one timed step = render every pixel of one image + ``backward`` of the mean colour.
Writes ``docs/benchmarks/scene.json`` and the section of ``docs/benchmarks.md`` between
``<!-- scene:begin -->`` and ``<!-- scene:end -->``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from uni3d.bench.common import machine, replace_section, section_markers
from uni3d.cli.commands import BENCHMARKS
from uni3d.io import save_json
from uni3d.scene.backend import resolve_backend
from uni3d.scene.cameras import CameraSampler
from uni3d.scene.renderer import build_renderer
from uni3d.tasks.reconstruct.fit import FitConfig

BEGIN, END = section_markers("scene")
WARMUP = 3
"""Untimed steps first: torch.compile compiles at the first and, once the ray-sample count varies, recompiles
with dynamic shapes at the second; timing those would measure the compiler, not the renderer."""


def add_commands(bench_subparsers: argparse._SubParsersAction) -> None:
    """Register ``scene`` on the ``uni3d bench`` subparsers."""
    p = bench_subparsers.add_parser("scene", help=BENCHMARKS["scene"].help)
    p.add_argument("--sizes", default="64,128", help="image sizes, comma-separated (default 64,128)")
    p.add_argument(
        "--repeats", type=int, default=3, help=f"timed steps per case after {WARMUP} warm-up steps (default 3)"
    )
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile case (about 30 s to compile)")
    p.add_argument("--docs", type=Path, default=Path("docs"), help="docs folder to write into (default docs)")
    p.set_defaults(func=_bench_scene)


def rays_per_second(backend: str, compile: bool, size: int, repeats: int) -> dict[str, float]:
    """Time ``repeats`` forward+backward renders of a ``size x size`` image; rays/s and samples per ray."""
    torch.manual_seed(0)
    cfg = FitConfig()
    renderer = build_renderer(
        cfg.field, backend=backend, background="random", render_steps=cfg.render_steps, compile=compile
    )
    device = "cuda" if backend == "cuda" else "cpu"
    renderer.to(device).train()
    renderer.estimator.update(renderer.field.density, warmup=True)
    cams = CameraSampler().sample(WARMUP + repeats, size, generator=torch.Generator().manual_seed(0))
    origins, dirs = (t.reshape(WARMUP + repeats, -1, 3).to(device) for t in cams.rays())
    times, samples = [], []
    for i in range(WARMUP + repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = renderer(origins[i], dirs[i])
        out.rgb.mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= WARMUP:
            times.append(time.perf_counter() - start)
            samples.append(out.n_samples / origins.shape[1])
    seconds = sum(times) / len(times)
    return {
        "rays_per_s": size * size / seconds,
        "seconds_per_step": seconds,
        "samples_per_ray": sum(samples) / len(samples),
    }


def _section(rows: list[dict[str, object]], info: dict[str, object]) -> str:
    lines = [
        BEGIN,
        "## Scene renderer: rays per second (forward + backward)",
        "",
        f"`uni3d bench scene` on {info['cpu']} ({info['cores']} cores, {info['torch_threads']} torch threads), "
        f"torch {info['torch']}, {info['date']}, load average {info['load_average_1min']}. Fresh default field (blob), occupancy grid refreshed, "
        f"one full image per step, timed after {WARMUP} untimed warm-up steps (compilation included there).",
        "",
        "| backend | image | rays/s | s/step | samples/ray |",
        "|---|---|---|---|---|",
        *[
            f"| {r['case']} | {r['size']}x{r['size']} | {r['rays_per_s']:,.0f} | {r['seconds_per_step']:.3f} | "
            f"{r['samples_per_ray']:.1f} |"
            for r in rows
        ],
        *_compile_verdict(rows),
        END,
    ]
    return "\n".join(lines)


def compile_speedups(rows: list[dict[str, object]]) -> dict[int, float]:
    """Compiled over eager rays per second, per image size measured both ways (below 1: compile loses)."""
    by = {(r["case"], r["size"]): float(r["rays_per_s"]) for r in rows}  # type: ignore[arg-type]
    return {
        int(size): by[("torch compiled", size)] / eager  # type: ignore[call-overload]
        for (case, size), eager in by.items()
        if case == "torch eager" and ("torch compiled", size) in by
    }


def _compile_verdict(rows: list[dict[str, object]]) -> list[str]:
    """One sentence per image size comparing compiled with eager (it may say we lose)."""
    lines = [
        f"- {size}x{size}: torch.compile is {'faster' if x > 1 else 'SLOWER'} than eager ({x:.2f}x)."
        for size, x in compile_speedups(rows).items()
    ]
    return ["", *lines] if lines else []


def _write(docs: Path, rows: list[dict[str, object]], info: dict[str, object]) -> None:
    speedups = {str(size): x for size, x in compile_speedups(rows).items()}
    save_json(docs / "benchmarks" / "scene.json", {"machine": info, "rows": rows, "compile_speedup": speedups})
    replace_section(docs / "benchmarks.md", _section(rows, info))


def _bench_scene(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.sizes.split(",") if s]
    cases = [("torch eager", "torch", False)]
    if not args.no_compile:
        cases.append(("torch compiled", "torch", True))
    if resolve_backend("auto") == "cuda":
        cases.append(("tinycudann + nerfacc", "cuda", False))
    rows = []
    for name, backend, compile in cases:
        for size in sizes:
            row = {"case": name, "size": size, **rays_per_second(backend, compile, size, args.repeats)}
            print(
                f"{name:22s} {size:4d}px  {row['rays_per_s']:10,.0f} rays/s  {row['samples_per_ray']:.1f} samples/ray"
            )
            rows.append(row)
    info = machine()
    _write(args.docs, rows, info)
    return 0
