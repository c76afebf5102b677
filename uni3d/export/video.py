"""Turntable video (MP4 through imageio-ffmpeg's bundled ffmpeg, GIF when that fails) and a contact sheet PNG."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
import trimesh

from uni3d.errors import UsageError
from uni3d.export.raster import rasterize_trimesh
from uni3d.io import atomic_write
from uni3d.scene.cameras import orbit_cameras

log = logging.getLogger(__name__)


def turntable_frames(
    mesh: trimesh.Trimesh,
    n_frames: int = 72,
    size: int = 256,
    *,
    elevation_deg: float = 15.0,
    distance: float = 3.0,
    background: float = 1.0,
) -> np.ndarray:
    """``(n_frames, size, size, 3)`` uint8 views of ``mesh`` on a full azimuth orbit: its vertex colours under a
    fixed key light (:func:`~uni3d.export.raster.rasterize_trimesh`, 2x supersampled), composited on a grey level
    ``background``. The exported asset itself, not the field it came from, and cheap enough on a CPU for a
    256-pixel, 3-second default."""
    if not 1 <= n_frames <= 1000 or not 16 <= size <= 1024:
        raise UsageError(f"turntable needs 1-1000 frames of 16-1024 pixels, got {n_frames} x {size}")
    cams = orbit_cameras(n_frames, elevation_deg=elevation_deg, distance=distance, size=size)
    rgb, alpha = rasterize_trimesh(cams, mesh)
    return ((rgb + (1 - alpha) * background).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def write_video(frames: np.ndarray, path: str | Path, fps: int = 24) -> Path:
    """Write ``frames`` as MP4 (H.264, yuv420p) at ``path``; if ffmpeg fails, as a GIF beside it. Returns the file."""
    path = Path(path)
    try:
        buf = io.BytesIO()
        iio.imwrite(buf, frames, extension=".mp4", fps=fps, codec="libx264", macro_block_size=1)
        return atomic_write(path.with_suffix(".mp4"), buf.getvalue())
    except Exception as err:  # no ffmpeg binary, codec missing: fall back to GIF
        log.warning("MP4 writing failed (%s); writing a GIF instead", err)
        data = iio.imwrite("<bytes>", frames, extension=".gif", duration=1000 / fps, loop=0)
        return atomic_write(path.with_suffix(".gif"), data)


def contact_sheet(frames: np.ndarray, path: str | Path, columns: int = 8, max_tiles: int = 16) -> Path:
    """A PNG grid of up to ``max_tiles`` evenly spaced frames, ``columns`` per row."""
    if len(frames) == 0:
        raise UsageError("no frames for the contact sheet")
    pick = frames[np.linspace(0, len(frames) - 1, min(max_tiles, len(frames))).round().astype(int)]
    cols = min(columns, len(pick))
    rows = -(-len(pick) // cols)
    h, w = pick.shape[1:3]
    sheet = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i, tile in enumerate(pick):
        r, c = divmod(i, cols)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = tile
    return atomic_write(path, iio.imwrite("<bytes>", sheet, extension=".png"))
