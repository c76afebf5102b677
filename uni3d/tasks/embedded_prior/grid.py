"""Image grids for the prior's sample sheets: tiles in rows, optional text labels, written as PNG atomically."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from uni3d.io import atomic_write


def image_grid(images: torch.Tensor, cols: int, scale: int = 2, pad: int = 2) -> np.ndarray:
    """``images (B, 3, H, W)`` in ``[0, 1]`` as one ``uint8 (rows*(H*scale+pad)+pad, ..., 3)`` grid, row-major."""
    b, _, h, w = images.shape
    rows = -(-b // cols)
    tile_h, tile_w = h * scale + pad, w * scale + pad
    grid = np.full((rows * tile_h + pad, cols * tile_w + pad, 3), 255, dtype=np.uint8)
    tiles = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        big = tile.repeat(scale, 0).repeat(scale, 1)  # nearest-neighbour: the pixels the model made
        grid[pad + r * tile_h : pad + r * tile_h + h * scale, pad + c * tile_w : pad + c * tile_w + w * scale] = big
    return grid


def labelled_grid(
    grid: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], margin: int = 64
) -> Image.Image:
    """``grid`` with ``row_labels`` in a left margin and ``col_labels`` in a top margin (PIL's default font)."""
    h, w, _ = grid.shape
    top = 16
    sheet = Image.new("RGB", (w + margin, h + top), "white")
    sheet.paste(Image.fromarray(grid), (margin, top))
    draw = ImageDraw.Draw(sheet)
    for i, text in enumerate(row_labels):
        draw.text((4, top + (i + 0.5) * h / len(row_labels) - 5), text, fill="black")
    for j, text in enumerate(col_labels):
        draw.text((margin + (j + 0.5) * w / len(col_labels) - 3 * len(text), 2), text, fill="black")
    return sheet


def save_png(image: np.ndarray | Image.Image, path: str | Path) -> Path:
    """Write ``image`` (``uint8 (H, W, 3)`` array or PIL image) as PNG through :func:`uni3d.io.atomic_write`."""
    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    return atomic_write(path, buf.getvalue())
