"""The picture of ``uni3d bench shapes``: per run, the field as the turntable renders it and the exported mesh."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import trimesh


def contact_sheet_image(groups: dict[tuple[int, str], list[dict[str, Any]]], tile: int = 96) -> np.ndarray | None:
    """Two tiles per finished run, labelled: the first turntable frame (the field as rendered) above the exported
    mesh that is scored (:func:`mesh_render`); one row per (steps, preset) group."""
    from PIL import Image, ImageDraw

    if not groups:
        return None
    cols = max(len(g) for g in groups.values())
    label = 14
    height = 2 * tile + 2 * label
    sheet = Image.new("RGB", (cols * tile, len(groups) * height), "white")
    draw = ImageDraw.Draw(sheet)
    for i, ((steps, preset), group) in enumerate(groups.items()):
        y = i * height
        draw.text((2, y), f"{preset}, {steps} steps (render above, exported mesh below)", fill="black")
        for j, r in enumerate(group):
            for k, image in enumerate((_first_frame(Path(r["out"])), mesh_render(Path(r["out"]), tile))):
                if image is not None:
                    sheet.paste(image.resize((tile, tile)), (j * tile, y + label + k * tile))
            name = r["prompt"].removeprefix("a ").removeprefix("an ")
            draw.text((j * tile + 2, y + label + 2 * tile), f"{name} {r['seed']}"[:16], fill="black")
    return np.asarray(sheet)


def mesh_render(out: Path, size: int):  # noqa: ANN201 - PIL type kept out of the signature
    """The run's ``model_vertex_color.glb`` rasterized (vertex albedo, the world key light) from elevation 20
    degrees on white, or ``None`` when the run folder has no mesh."""
    from PIL import Image

    from uni3d.reconstruct.views import rasterize_trimesh
    from uni3d.scene.cameras import orbit_cameras

    try:
        mesh = trimesh.load(out / "model_vertex_color.glb", force="mesh")
    except (OSError, ValueError):
        return None
    rgb, alpha = rasterize_trimesh(orbit_cameras(1, elevation_deg=20.0, size=size), mesh)
    image = (rgb + (1 - alpha))[0].clamp(0, 1).numpy()
    return Image.fromarray((image * 255).round().astype(np.uint8))


def _first_frame(out: Path):  # noqa: ANN202 - PIL type kept out of the signature
    from PIL import Image

    try:
        cfg = json.loads((out / "config.json").read_text())
        size = int(cfg["export"]["turntable_size"])
        with Image.open(out / "contact_sheet.png") as im:
            return im.convert("RGB").crop((0, 0, size, size))
    except (OSError, KeyError, ValueError):
        return None
