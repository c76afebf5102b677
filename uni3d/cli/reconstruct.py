"""``uni3d reconstruct MESH``: the renderer and exporter proven on a real mesh (text report or ``--json``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from uni3d.cli.commands import COMMANDS
from uni3d.scene.backend import BACKENDS
from uni3d.tasks.reconstruct.fit import FitConfig
from uni3d.tasks.reconstruct.meshes import EXAMPLE_MESHES
from uni3d.tasks.reconstruct.run import ReconstructConfig, reconstruct

_FIT = FitConfig()
_REC = ReconstructConfig(mesh="ant")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``reconstruct`` on the top-level ``uni3d`` subparsers."""
    p = subparsers.add_parser(
        "reconstruct",
        help=COMMANDS["reconstruct"].help,
        description="Render MESH from many views, fit the hash-grid field to the images (photometric loss only), "
        "export GLB/OBJ/video, and report the Chamfer distance to the source (over its bounding-box diagonal) "
        f"and PSNR on held-out views. MESH is a file trimesh reads, or one of {', '.join(EXAMPLE_MESHES)} "
        "(the meshes shipped in the pyvista wheel; pip install --no-deps pyvista).",
    )
    p.add_argument("mesh", metavar="MESH", help="mesh file or example name (e.g. ant)")
    p.add_argument("--views", type=int, default=_REC.views, help=f"training views (default {_REC.views})")
    p.add_argument("--holdout-views", type=int, default=_REC.holdout_views, help="held-out views for PSNR")
    p.add_argument("--image-size", type=int, default=_REC.image_size, help="view size in pixels")
    p.add_argument("--steps", type=int, default=_FIT.steps, help=f"maximum fit steps (default {_FIT.steps})")
    p.add_argument("--time-budget", type=float, default=240.0, help="fit time limit in seconds (default 240)")
    p.add_argument("--rays", type=int, default=_FIT.rays_per_step, help="rays per step")
    p.add_argument("--mc-resolution", type=int, default=_REC.mc_resolution, help="marching-cubes grid size")
    p.add_argument("--max-faces", type=int, default=_REC.max_faces, help="face budget before UV unwrapping")
    p.add_argument("--texture-size", type=int, default=_REC.texture_size, help="baked texture size in pixels")
    p.add_argument(
        "--surface-pull",
        type=float,
        default=_FIT.surface_pull,
        help=f"weight of the balloon term that keeps unlit faces from sinking in (default {_FIT.surface_pull}; 0 turns it off)",
    )
    p.add_argument(
        "--error-sampling",
        type=float,
        default=_FIT.error_sampling,
        help=f"share of each step's rays drawn in proportion to the pixel's last error (default {_FIT.error_sampling}; "
        "0: all uniform)",
    )
    p.add_argument(
        "--fill-unseen",
        action=argparse.BooleanOptionalAction,
        default=_REC.fill_unseen,
        help="fill the voxels no axis-aligned view sees before marching cubes (default on; off was better for a "
        "cup's deep opening and worse for an annulus, see docs/reconstruct.md)",
    )
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="scene backend (default auto)")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="torch.compile the PyTorch hash grid (default on: about 5x more fit steps per second on the 2-core CPU measured; "
        "falls back to eager if it cannot compile)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/reconstruct/<mesh name>)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_reconstruct)


def _reconstruct(args: argparse.Namespace) -> int:
    fit = FitConfig(
        steps=args.steps,
        time_budget_s=args.time_budget,
        rays_per_step=args.rays,
        warmup_rays=min(args.rays, _FIT.warmup_rays),
        seed=args.seed,
        backend=args.backend,
        compile=args.compile,
        surface_pull=args.surface_pull,
        error_sampling=args.error_sampling,
    )
    cfg = ReconstructConfig(
        mesh=args.mesh,
        views=args.views,
        holdout_views=args.holdout_views,
        image_size=args.image_size,
        mc_resolution=args.mc_resolution,
        max_faces=args.max_faces,
        texture_size=args.texture_size,
        fill_unseen=args.fill_unseen,
        fit=fit,
    )
    out = args.out or Path("runs") / "reconstruct" / Path(args.mesh.removeprefix("example:")).stem
    log = (lambda _: None) if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    report = reconstruct(cfg, out, log=log)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            "\n".join(
                [
                    f"mesh              {report['mesh']} ({report['source_faces']} faces)",
                    f"views             {report['views']} training, {report['holdout_views']} held out, "
                    f"{report['image_size']} px",
                    f"fit               {report['steps']} steps in {report['fit_seconds']} s ({report['backend']})",
                    f"held-out PSNR     {report['psnr_holdout_db']:.2f} dB",
                    f"Chamfer / diag    {100 * report['chamfer_over_diagonal']:.3f} %",
                    f"exported mesh     {report['mesh_vertices']} vertices, {report['mesh_faces']} faces",
                    f"outputs           {out}/ (model.glb, model_vertex_color.glb, model.obj, {report['video']}, "
                    "contact_sheet.png, metrics.json)",
                ]
            )
        )
    return 0
