"""Axis-aligned cross-sections of exported meshes against their source, as one PNG.

``python -m uni3d.tasks.reconstruct.sections SOURCE OUT.png LABEL=MESH [LABEL=MESH ...]`` draws the sections through
the origin (normalised frame of :func:`uni3d.tasks.reconstruct.meshes.load_mesh`, the frame every export is in) of the
source mesh in black and of each exported mesh in its own colour: where a surface sinks in or bulges out.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib
import numpy as np
import trimesh

from uni3d.errors import UsageError
from uni3d.tasks.reconstruct.meshes import load_mesh

# The three slices: (normal axis, the two in-plane axes drawn as horizontal and vertical, title).
SLICES = ((2, (0, 1), "z = 0 (x-y)"), (0, (1, 2), "x = 0 (y-z)"), (1, (2, 0), "y = 0 (z-x)"))
COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:orange")


def section_lines(mesh: trimesh.Trimesh, axis: int) -> list[np.ndarray]:
    """Polylines ``(K, 3)`` of the mesh's section by the plane through the origin normal to ``axis``."""
    section = mesh.section(plane_origin=(0.0, 0.0, 0.0), plane_normal=np.eye(3)[axis])
    return [] if section is None else list(section.discrete)


def plot_sections(source: trimesh.Trimesh, meshes: dict[str, trimesh.Trimesh], path: Path, title: str = "") -> None:
    """Write the three origin sections of ``source`` (black) and of each of ``meshes`` to ``path``."""
    if len(meshes) > len(COLOURS):
        raise UsageError(f"at most {len(COLOURS)} meshes per section plot, got {len(meshes)}")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    extent = 1.15 * float(np.abs(source.vertices).max())
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.3))
    drawn = [("source", source, "black"), *((k, m, c) for (k, m), c in zip(meshes.items(), COLOURS, strict=False))]
    for ax, (axis, (u, v), name) in zip(axes, SLICES, strict=True):
        for label, mesh, colour in drawn:
            for i, line in enumerate(section_lines(mesh, axis)):
                ax.plot(line[:, u], line[:, v], color=colour, lw=1.2, label=label if i == 0 else None)
        ax.set(aspect="equal", title=name, xlim=(-extent, extent), ylim=(-extent, extent))
        ax.grid(alpha=0.3)
    axes[0].legend(loc="center", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or any("=" not in a for a in argv[2:]):
        raise UsageError("usage: python -m uni3d.tasks.reconstruct.sections SOURCE OUT.png LABEL=MESH [LABEL=MESH ...]")
    source = load_mesh(argv[0]).mesh
    meshes = {}
    for arg in argv[2:]:
        label, _, file = arg.partition("=")
        if not Path(file).is_file():
            raise UsageError(f"no mesh file at {file}")
        meshes[label] = trimesh.load(file, force="mesh")
    plot_sections(source, meshes, Path(argv[1]), title=f"{Path(argv[0]).name}: sections through the origin")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except UsageError as err:
        sys.exit(f"error: {err}")
