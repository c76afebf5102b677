"""Mesh files: OBJ + MTL + PNG and GLB (textured or vertex-coloured), each written atomically.

Meshes are stored in scene coordinates (``+y`` up, as glTF expects).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from uni3d.errors import UsageError
from uni3d.io import atomic_write


def _check(mesh: trimesh.Trimesh) -> None:
    if len(mesh.faces) == 0 or len(mesh.vertices) == 0:
        raise UsageError("refusing to write an empty mesh")


def _unit_normals(mesh: trimesh.Trimesh) -> None:
    """Give every vertex a unit normal (glTF requires it; a vertex of only degenerate faces has none)."""
    normals = np.asarray(mesh.vertex_normals, dtype=np.float64).copy()
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(length > 1e-8, normals / np.maximum(length, 1e-12), [0.0, 1.0, 0.0])
    mesh.vertex_normals = normals


def write_glb(mesh: trimesh.Trimesh, path: str | Path) -> Path:
    """Binary glTF 2.0 of ``mesh`` with its texture or vertex colours (and unit vertex normals)."""
    _check(mesh)
    mesh = mesh.copy()
    _unit_normals(mesh)
    return atomic_write(path, trimesh.exchange.gltf.export_glb(trimesh.Scene(mesh), include_normals=True))


def write_obj(mesh: trimesh.Trimesh, path: str | Path) -> list[Path]:
    """``NAME.obj`` plus, for a textured mesh, ``NAME.mtl`` and its PNG texture, beside it; returns the files."""
    _check(mesh)
    path = Path(path)
    text, extra = trimesh.exchange.obj.export_obj(
        mesh, include_normals=True, include_texture=True, return_texture=True, mtl_name=f"{path.stem}.mtl"
    )
    written = [atomic_write(path.parent / name, data) for name, data in extra.items()]
    return [atomic_write(path, text), *written]
