"""UV atlas (xatlas) and texture baking: each texel takes the field's albedo at its surface point.

Texels are rasterized in UV space (``covered_pixels``), their 3-D points interpolated barycentrically; empty
texels take the colour of the nearest filled texel (so bilinear lookups at chart seams never see black).
UV ``(u, v)`` maps to texel ``(u * S, (1 - v) * S)`` (glTF/OBJ put ``v = 0`` at the image bottom).
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh
import xatlas
from scipy import ndimage

from uni3d.export.raster2d import covered_pixels
from uni3d.scene.field import RadianceField


@torch.no_grad()
def field_colors(field: RadianceField, points: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Albedo ``(N, 3)`` in ``[0, 1]`` at world points ``(N, 3)``."""
    pts = torch.as_tensor(np.asarray(points), dtype=torch.float32)
    if len(pts) == 0:
        return np.zeros((0, 3), np.float32)
    return torch.cat([field.albedo(c) for c in pts.split(chunk)]).numpy()


def vertex_colored(mesh: trimesh.Trimesh, field: RadianceField) -> trimesh.Trimesh:
    """A copy of ``mesh`` with the field's albedo as RGBA8 vertex colours."""
    rgb = field_colors(field, mesh.vertices)
    rgba = np.concatenate([np.round(rgb * 255), np.full((len(rgb), 1), 255)], 1).astype(np.uint8)
    out = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    out.visual = trimesh.visual.ColorVisuals(out, vertex_colors=rgba)
    return out


def bake_texture(mesh: trimesh.Trimesh, field: RadianceField, size: int = 1024) -> trimesh.Trimesh:
    """xatlas-unwrapped copy of ``mesh`` with a ``size x size`` albedo texture baked from ``field``."""
    vmap, faces, uvs = xatlas.parametrize(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.uint32))
    verts = np.asarray(mesh.vertices)[vmap]
    tri_uv = torch.tensor(np.stack([uvs[:, 0] * size, (1 - uvs[:, 1]) * size], -1)[faces.astype(np.int64)])
    fid, px, py, bary = covered_pixels(tri_uv.float(), size, size)
    corners = torch.tensor(verts, dtype=torch.float32)[torch.tensor(faces.astype(np.int64))[fid]]  # (K, 3, 3)
    points = (corners * bary.unsqueeze(-1)).sum(1).numpy()
    image = np.zeros((size, size, 3), np.float32)
    filled = np.zeros((size, size), bool)
    image[py.numpy(), px.numpy()] = field_colors(field, points)
    filled[py.numpy(), px.numpy()] = True
    if filled.any():
        _, (rows, cols) = ndimage.distance_transform_edt(~filled, return_indices=True)
        image = image[rows, cols]
    texture = trimesh.visual.material.PBRMaterial(
        baseColorTexture=_to_pil(image), metallicFactor=0.0, roughnessFactor=1.0
    )
    out = trimesh.Trimesh(verts, faces.astype(np.int64), process=False)
    out.visual = trimesh.visual.TextureVisuals(uv=uvs, material=texture)
    return out


def _to_pil(image: np.ndarray):  # noqa: ANN202 - PIL type kept out of the signature
    from PIL import Image

    return Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
