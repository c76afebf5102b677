"""``uni3d generate PROMPT``, ``uni3d batch FILE`` and ``uni3d clean DIR``: text to 3D assets (the pipeline is
imported on use)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from uni3d.cli.commands import COMMANDS
from uni3d.cli.flags import Flag, add_flags, given, names
from uni3d.cli.launch import worker_group
from uni3d.config import read_config_file
from uni3d.errors import UsageError
from uni3d.tasks.text_to_3d.batch import (
    format_summary,
    merge_reports,
    parse_shard,
    run_batch,
    run_folder,
    shard_from_env,
)
from uni3d.tasks.text_to_3d.cleanup import finished_checkpoints
from uni3d.tasks.text_to_3d.config import EMBEDDED_PRIOR, TEXT_TO_3D_PRESETS, GenerateConfig
from uni3d.tasks.text_to_3d.preflight import preflight
from uni3d.tasks.text_to_3d.recipes import RECIPES

_DEFAULTS = GenerateConfig(prompt="-")
_FLAGS: tuple[Flag, ...] = (
    ("prior", str, f"Stable Diffusion folder or hub id (default the embedded prior, {EMBEDDED_PRIOR})"),
    ("preset", str, f"loss preset: {', '.join(TEXT_TO_3D_PRESETS)} (default {_DEFAULTS.preset})"),
    ("recipe", str, f"named settings laid under yours: {', '.join(RECIPES)} (default: by prior and preset)"),
    ("steps", int, f"optimisation steps (default {_DEFAULTS.steps})"),
    ("particles", int, "radiance fields optimised together, one shared fake score (default 1)"),
    ("particles_per_step", int, "particles rendered per step, in rotation (default all)"),
    ("seed", int, f"seed (default {_DEFAULTS.seed})"),
    (
        "noise",
        str,
        "fresh (a new noise every step) or seeded (one noise per particle: varied particles; default fresh)",
    ),
    ("t_schedule", str, "timesteps: uniform in the range, or descending from high to low (default uniform)"),
    (
        "fake_estimator",
        str,
        "fake score of vsd, uni-* and the other learned presets: lora (trained on the renders) or particles "
        "(the particles' exact empirical denoiser, no training) (default particles with --particles > 1, else lora)",
    ),
    ("guidance_scale", float, f"classifier-free guidance scale (default {_DEFAULTS.guidance_scale})"),
    ("t_min", float, "lower end of the timestep range, fraction of T (default 0.02; 0.2 for ratio-weighted presets)"),
    ("negative_prompt", str, "negative prompt (default empty)"),
    ("render_size", int, "render side in pixels (default the prior's image side, at most 128)"),
    ("device", str, "cpu, cuda or auto (default auto)"),
    ("dtype", str, "prior weights: fp32, fp16 or bf16 (default fp32)"),
)
"""Settings with a flag: ``(field, type, help)``; the rest come from ``--config``."""
_SWITCHES: tuple[tuple[str, str], ...] = (
    ("allow_download", "let diffusers fetch a hub id"),
    ("attention_slicing", "prior memory: UNet attention in slices"),
    ("channels_last", "prior memory: UNet and VAE in channels-last format"),
    ("vae_slicing", "prior memory: VAE one image at a time"),
)
"""On/off settings with a flag: ``(field, help)``."""


def _add_settings(p: argparse.ArgumentParser) -> None:
    add_flags(p, _FLAGS, aliases={"preset": ["--guidance"]})
    for name, text in _SWITCHES:
        p.add_argument("--" + name.replace("_", "-"), dest=name, action="store_true", default=None, help=text)
    p.add_argument("--config", type=Path, default=None, help="YAML/JSON settings (e.g. a saved config.json); flags win")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``generate``, ``batch`` and ``clean`` on the top-level ``uni3d`` subparsers."""
    g = subparsers.add_parser(
        "generate",
        help=COMMANDS["generate"].help,
        description="Optimise a radiance field so its renders score well under a text-conditioned diffusion prior "
        "(sds, vsd, uni-<f>, fdistill-<f>), then export GLB, OBJ, a turntable video and metrics. Running the same "
        "command again resumes from the run folder's checkpoint.",
    )
    g.add_argument("prompt", metavar="PROMPT", help='what to make, e.g. "a red cube"')
    g.add_argument("--out", type=Path, default=None, help="run folder (default runs/<prompt slug>)")
    g.add_argument("--json", action="store_true", help="print the metrics as JSON")
    _add_settings(g)
    g.set_defaults(func=_generate)
    b = subparsers.add_parser(
        "batch",
        help=COMMANDS["batch"].help,
        description="One prompt per line, # starts a comment. Finished prompts are skipped, unfinished ones resume, "
        "failures are recorded and the batch goes on; --shard K/N runs every N-th prompt from the K-th. Under "
        "torchrun or in a SLURM array each worker takes its own shard and GPU: torchrun --nproc-per-node N -m "
        "uni3d batch FILE --out DIR, or sbatch --array=0-3 with uni3d batch FILE --out DIR; torchrun's rank 0 "
        "writes the combined report, after an array run uni3d batch --merge DIR does.",
    )
    b.add_argument("file", metavar="FILE", type=Path, nargs="?", help="prompt file")
    b.add_argument("--out", type=Path, default=None, help="folder for one run folder per prompt")
    b.add_argument("--shard", default=None, metavar="K/N", help="run shard K of N (1-based; default the launcher's)")
    b.add_argument("--merge", type=Path, default=None, metavar="DIR", help="only combine DIR's shard reports")
    _add_settings(b)
    b.set_defaults(func=_batch)
    c = subparsers.add_parser(
        "clean",
        help=COMMANDS["clean"].help,
        description="Delete checkpoint.pt (and checkpoint.prev.pt) of every finished run in the folders given, "
        "searched recursively; cancelled and unfinished runs keep theirs, since they resume from them. A cleaned "
        "run is still found as finished by generate and batch.",
    )
    c.add_argument("folders", metavar="DIR", type=Path, nargs="+", help="run folders, or folders holding them")
    c.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    c.set_defaults(func=_clean)


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults, then the ``--config`` file, then the flags given (without the prompt)."""
    values: dict[str, Any] = read_config_file(args.config, "generate") if args.config else {}
    values.pop("prompt", None)
    values.update(given(args, names(_FLAGS)))
    values.update({name: True for name, _ in _SWITCHES if getattr(args, name)})
    return values


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _generate(args: argparse.Namespace) -> int:
    from uni3d.tasks.text_to_3d.run import generate  # diffusers: imported only when a run starts

    cfg = GenerateConfig.from_dict({**settings_from_args(args), "prompt": args.prompt.strip()})
    out = args.out or run_folder(Path("runs"), cfg.prompt)
    preflight(cfg, out)  # before diffusers and the prior load
    metrics = generate(cfg, out, progress=not (args.quiet or args.json), log=_log)
    if args.json:
        print(json.dumps({**metrics, "out": str(out)}, indent=2))
        return 0
    lines = [
        f"prompt     {metrics['prompt']}  ({metrics['preset']}, {metrics['steps']} steps)",
        f"time       {metrics['train_seconds']:.1f} s training ({metrics['seconds_per_step']:.3f} s/step), "
        f"{metrics['export_seconds']:.1f} s export",
        f"repairs    {metrics['rollbacks']} rollbacks after non-finite steps",
    ]
    for name, asset, folder in _assets(metrics, out):
        lines.append(f"{name:<10} {asset['mesh_vertices']} vertices, {asset['mesh_faces']} faces: {folder / 'model.glb'}, "
                     f"{folder / asset['files'][3]}, model.obj")  # fmt: skip
    if "particles" in metrics:
        lines.append(f"sheet      {out / 'contact_sheet.png'} (every particle from the same views)")
    print("\n".join(lines))
    return 0


def _assets(metrics: dict[str, Any], out: Path) -> list[tuple[str, dict[str, Any], Path]]:
    """``(label, asset metrics, folder)`` of the run's one asset, or of each particle's."""
    if "particles" not in metrics:
        return [("mesh", metrics, out)]
    return [(f"particle {p['particle']}", p, out / f"particle-{p['particle']}") for p in metrics["particles"]]


def _clean(args: argparse.Namespace) -> int:
    for folder in args.folders:
        if not folder.is_dir():
            raise UsageError(f"{folder} is not a folder")
    files = [path for folder in args.folders for path in finished_checkpoints(folder)]
    size = sum(path.stat().st_size for path in files)
    for path in files:
        print(path)
        if not args.dry_run:
            path.unlink()
    verb = "would free" if args.dry_run else "freed"
    print(f"{len(files)} checkpoint(s) of finished runs, {verb} {size / 2**20:.1f} MiB")
    return 0


def _batch(args: argparse.Namespace) -> int:
    if args.merge is not None:
        rows = merge_reports(args.merge)
        print(format_summary(rows))
        return 1 if any(r.status == "failed" for r in rows) else 0
    if args.file is None or args.out is None:
        raise UsageError("batch needs a prompt FILE and --out DIR (or --merge DIR to combine shard reports)")
    shard = parse_shard(args.shard) if args.shard is not None else shard_from_env() or (1, 1)
    settings = settings_from_args(args)
    with worker_group() as group:
        if group is not None and settings.get("device", "auto") == "auto":
            settings["device"] = group.device
        rows = run_batch(args.file, args.out, settings, shard, progress=not args.quiet, log=_log)
        print(format_summary(rows))
        if group is not None and group.finish():  # every worker is done: rank 0 writes the combined report
            merge_reports(args.out)
    return 1 if any(r.status == "failed" for r in rows) else 0
