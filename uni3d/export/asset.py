"""A field to a finished asset: mesh, texture, GLB and OBJ files, turntable video and contact sheet."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trimesh

from uni3d.export.bake import bake_texture, vertex_colored
from uni3d.export.mesh import extract_mesh
from uni3d.export.video import contact_sheet, turntable_frames, write_video
from uni3d.export.writers import write_glb, write_obj
from uni3d.scene.renderer import VolumeRenderer


@dataclass(frozen=True)
class ExportSettings:
    """Mesh and video export of a field (:func:`export_asset`); ``iso_level=None`` puts the surface where the
    renderer does (:func:`uni3d.export.mesh.auto_threshold`)."""

    iso_level: float | None = None
    mc_resolution: int = 96
    max_faces: int = 10000
    texture_size: int = 512
    turntable_frames: int = 72
    turntable_size: int = 256


@dataclass
class ExportedAsset:
    """What :func:`export_asset` wrote: the (untextured) mesh in scene units, its iso-level, the video file."""

    mesh: trimesh.Trimesh
    iso_level: float
    video: Path


def export_asset(
    renderer: VolumeRenderer, out: Path, settings: ExportSettings, *, distance: float, fill_unseen: bool = True
) -> ExportedAsset:
    """Mesh, bake and write a field into ``out`` (each file atomically): ``model.glb`` (textured),
    ``model_vertex_color.glb``, ``model.obj`` + ``.mtl`` + texture PNG, ``turntable.mp4`` (or ``.gif``, 24 frames a
    second: the vertex-coloured mesh, :func:`~uni3d.export.video.turntable_frames`) and ``contact_sheet.png``; the
    turntable orbits at ``distance``. ``fill_unseen``: see
    :func:`uni3d.export.mesh.extract_mesh`."""
    s = settings
    mesh, level = extract_mesh(
        renderer, s.mc_resolution, threshold=s.iso_level, max_faces=s.max_faces, fill_unseen=fill_unseen
    )
    textured = bake_texture(mesh, renderer.field, s.texture_size)
    write_glb(textured, out / "model.glb")
    colored = vertex_colored(mesh, renderer.field)
    write_glb(colored, out / "model_vertex_color.glb")
    write_obj(textured, out / "model.obj")
    frames = turntable_frames(colored, s.turntable_frames, s.turntable_size, distance=distance)
    video = write_video(frames, out / "turntable.mp4")
    contact_sheet(frames, out / "contact_sheet.png")
    return ExportedAsset(mesh, level, video)
