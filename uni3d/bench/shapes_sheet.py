"""The picture of ``uni3d bench shapes``: per run, the field as the turntable renders it and the exported mesh.

Each finished run's pair of tiles is stored in ``docs/benchmarks/shapes/tiles/`` the first time the sheet is
drawn (:func:`stored_tiles`), so the sheet outlives the run folders: a run whose folder was deleted keeps its
picture, and a run with neither a folder nor stored tiles is left off the sheet rather than drawn blank.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from uni3d.io import atomic_write

TILE = 96
"""Side of one tile in pixels."""


def contact_sheet_image(
    groups: dict[tuple[int, str], list[dict[str, Any]]], tiles: Path, tile: int = TILE
) -> np.ndarray | None:
    """Two tiles per finished run, labelled: the first turntable frame (the field as rendered) above the exported
    mesh that is scored (:func:`mesh_render`); one row per (steps, preset) group that has a picture, ``None``
    when none has. ``tiles``: the folder of stored tiles (:func:`stored_tiles`)."""
    from PIL import Image, ImageDraw

    pictured = {}
    for name, group in groups.items():
        pairs = [(r, pair) for r in group if (pair := stored_tiles(r, tiles, tile)) is not None]
        if pairs:
            pictured[name] = pairs
    if not pictured:
        return None
    cols = max(len(g) for g in pictured.values())
    label = 14
    height = 2 * tile + 2 * label
    sheet = Image.new("RGB", (cols * tile, len(pictured) * height), "white")
    draw = ImageDraw.Draw(sheet)
    for i, ((steps, preset), pairs) in enumerate(pictured.items()):
        y = i * height
        draw.text((2, y), f"{preset}, {steps} steps (render above, exported mesh below)", fill="black")
        for j, (r, pair) in enumerate(pairs):
            sheet.paste(pair, (j * tile, y + label))
            name = r["prompt"].removeprefix("a ").removeprefix("an ")
            draw.text((j * tile + 2, y + label + 2 * tile), f"{name} {r['seed']}"[:16], fill="black")
    return np.asarray(sheet)


def tile_path(tiles: Path, row: dict[str, Any]) -> Path:
    """Where a run's tiles are stored: a readable name and a hash of the row's identity (prompt, preset, steps,
    seed and settings, export settings included), so distinct runs never share a file."""
    identity = "|".join(str(row.get(k, "")) for k in ("prompt", "preset", "steps", "seed", "settings"))
    slug = re.sub(r"[^a-z0-9]+", "-", f"{row['preset']} {row['steps']} {row['prompt']} {row['seed']}".lower())
    return tiles / f"{slug.strip('-')}-{hashlib.sha1(identity.encode()).hexdigest()[:10]}.png"


def store_tiles(row: dict[str, Any], tiles: Path, tile: int = TILE):  # noqa: ANN201 - PIL type kept out
    """Draw the run's two tiles (render above, mesh below) from its folder and store them (atomically, replacing
    older ones: call it after a re-export); ``None`` when the folder has neither picture."""
    from PIL import Image

    out = Path(row["out"])
    images = (_first_frame(out), mesh_render(out, tile))
    if all(image is None for image in images):
        return None
    pair = Image.new("RGB", (tile, 2 * tile), "white")
    for k, image in enumerate(images):
        if image is not None:
            pair.paste(image.resize((tile, tile)), (0, k * tile))
    buffer = io.BytesIO()
    pair.save(buffer, format="PNG", optimize=True)
    atomic_write(tile_path(tiles, row), buffer.getvalue())
    return pair


def stored_tiles(row: dict[str, Any], tiles: Path, tile: int = TILE):  # noqa: ANN201 - PIL type kept out
    """The run's stored tiles, else :func:`store_tiles` from its folder; ``None`` when there are neither."""
    from PIL import Image

    path = tile_path(tiles, row)
    if path.is_file():
        with Image.open(path) as im:
            pair = im.convert("RGB")
        if pair.size == (tile, 2 * tile):
            return pair
    return store_tiles(row, tiles, tile)


def mesh_render(out: Path, size: int):  # noqa: ANN201 - PIL type kept out of the signature
    """The run's ``model_vertex_color.glb`` rasterized (vertex albedo, the world key light) from elevation 20
    degrees on white, or ``None`` when the run folder has no mesh."""
    from PIL import Image

    from uni3d.export.raster import rasterize_trimesh
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


def prune_tiles(tiles: Path, rows: list[dict[str, Any]]) -> None:
    """Delete the stored tiles of runs that are no longer rows (re-exported under other settings, or dropped)."""
    keep = {tile_path(tiles, r).name for r in rows}
    for path in tiles.glob("*.png"):
        if path.name not in keep:
            path.unlink()
