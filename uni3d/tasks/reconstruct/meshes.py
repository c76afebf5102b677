"""Source meshes: load, check and normalise a mesh, and find the example meshes shipped inside PyPI packages."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from uni3d.errors import UsageError

EXAMPLE_MESHES = ("ant", "airplane", "nut", "sphere")
"""Real meshes shipped in the ``pyvista`` wheel (``pyvista/examples/*.ply``), read without importing pyvista."""


def example_mesh_path(name: str) -> Path:
    """Path of a pyvista example mesh (``pip install --no-deps pyvista``; pyvista itself is never imported)."""
    if name not in EXAMPLE_MESHES:
        raise UsageError(f"unknown example mesh {name!r}; choose one of {', '.join(EXAMPLE_MESHES)}")
    spec = importlib.util.find_spec("pyvista")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("example meshes need the pyvista wheel: pip install --no-deps pyvista")
    path = Path(list(spec.submodule_search_locations)[0]) / "examples" / f"{name}.ply"
    if not path.is_file():
        raise UsageError(f"example mesh {path} is missing from the installed pyvista")
    return path


def resolve_mesh_path(spec: str) -> Path:
    """A file path, or ``example:NAME`` / a bare example name for a shipped example mesh."""
    name = spec.removeprefix("example:")
    if spec.startswith("example:") or (name in EXAMPLE_MESHES and not Path(spec).exists()):
        return example_mesh_path(name)
    return Path(spec)


@dataclass
class SourceMesh:
    """A mesh centred at the origin and scaled so its largest half-extent is ``half_extent``.

    ``scale`` maps source units to scene units (``scene = (source - center) * scale``).
    """

    mesh: trimesh.Trimesh
    center: np.ndarray
    scale: float

    @property
    def diagonal(self) -> float:
        """Bounding-box diagonal in scene units."""
        return float(np.linalg.norm(self.mesh.extents))


def load_mesh(spec: str, half_extent: float = 0.7) -> SourceMesh:
    """Read and normalise a mesh; one-line :class:`UsageError` when it is unreadable, empty or degenerate."""
    path = resolve_mesh_path(spec)
    if not path.is_file():
        raise UsageError(f"mesh file not found: {path}")
    try:
        loaded = trimesh.load(path, force="mesh", process=False)
    except Exception as err:  # trimesh raises many types for bad files
        raise UsageError(
            f"cannot read mesh {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from err
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0 or len(loaded.vertices) == 0:
        raise UsageError(f"mesh {path} has no triangles")
    extent = float(np.max(loaded.extents))
    if not np.isfinite(extent) or extent <= 0:
        raise UsageError(f"mesh {path} is degenerate (zero or non-finite extent)")
    center = loaded.bounds.mean(0)
    scale = 2 * half_extent / extent
    mesh = trimesh.Trimesh((loaded.vertices - center) * scale, loaded.faces, process=False)
    if loaded.visual.kind == "vertex":
        mesh.visual.vertex_colors = loaded.visual.vertex_colors
    return SourceMesh(mesh, center, scale)
