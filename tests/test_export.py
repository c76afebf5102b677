"""Export: marching cubes of a field, texture bake, OBJ/GLB (Khronos-validated), video, contact sheet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from skimage import measure

from uni3d.errors import UsageError
from uni3d.export import mesh as export_mesh
from uni3d.export.bake import bake_texture, vertex_colored
from uni3d.export.mesh import SURFACE_TRANSMITTANCE, decimate, extract_mesh, fill_cavities, fill_unseen_voxels
from uni3d.export.validate import validate_gltf, validator_missing
from uni3d.export.video import contact_sheet, turntable_frames, write_video
from uni3d.export.writers import write_glb, write_obj
from uni3d.scene import FieldConfig, HashGridConfig, build_renderer
from uni3d.scene.cameras import orbit_cameras

ENC = HashGridConfig(n_levels=4, log2_table_size=12, base_resolution=4, max_resolution=32)


def _blob_renderer(empty: bool = False):
    torch.manual_seed(0)
    cfg = FieldConfig(encoding=ENC, blob_density=0.0 if empty else 10.0, blob_radius=0.3)
    renderer = build_renderer(cfg, backend="torch", background="solid", grid_resolution=32, render_steps=128).eval()
    if empty:
        with torch.no_grad():
            renderer.field.density_head[-1].bias.fill_(-30.0)
    renderer.estimator.update(renderer.field.density, warmup=True)
    return renderer


@pytest.fixture(scope="module")
def blob() -> tuple[object, trimesh.Trimesh]:
    renderer = _blob_renderer()
    mesh, _ = extract_mesh(renderer, resolution=32, max_faces=800)
    return renderer, mesh


def test_marching_cubes_of_the_blob_is_a_closed_ball(blob: tuple[object, trimesh.Trimesh]) -> None:
    _, mesh = blob
    assert 100 <= len(mesh.faces) <= 820
    radius = mesh.vertices.__abs__().max()
    assert 0.2 < radius < 0.9 and abs(mesh.centroid).max() < 0.05


def _faces_outward(mesh: trimesh.Trimesh) -> bool:
    """Counter-clockwise seen from outside: positive signed volume, and normals away from the centre."""
    outward = (mesh.vertex_normals * (mesh.vertices - mesh.centroid)).sum(1)
    return bool(mesh.volume > 0 and (outward > 0).mean() > 0.95)


def test_exported_faces_point_outward(blob: tuple[object, trimesh.Trimesh]) -> None:
    _, mesh = blob
    assert mesh.is_winding_consistent and _faces_outward(mesh)


def test_decimation_keeps_a_closed_box_closed_and_in_one_piece() -> None:
    """Marching cubes of a box whose density is noisy, as a fitted one is (flat faces: the case where
    fast-simplification, the first release's decimator, tore this surface open into 2 pieces, and into 108 at 3x
    the noise)."""
    x = np.linspace(-1, 1, 96)
    grid = np.meshgrid(x, x, x, indexing="ij")
    box = np.abs(np.stack(grid)).max(0)
    density = np.exp(-(box - 0.6) * 40 + 0.3 * np.random.default_rng(0).standard_normal(box.shape))
    verts, faces, _, _ = measure.marching_cubes(density, level=1.0, spacing=(x[1] - x[0],) * 3)
    mesh = trimesh.Trimesh(verts, faces[:, ::-1])
    mesh = max(mesh.split(only_watertight=False), key=lambda part: len(part.faces))
    assert mesh.is_watertight and len(mesh.faces) > 20 * 2000
    out = decimate(mesh, 2000)
    assert 1900 <= len(out.faces) <= 2000
    assert out.is_watertight and len(out.split(only_watertight=False)) == 1
    assert out.volume == pytest.approx(mesh.volume, rel=0.02) and _faces_outward(out)


def test_automatic_level_puts_the_surface_where_rays_start_to_be_absorbed() -> None:
    """Radial density ramp ``40 relu(0.5 - r)``: the mesh's radius is the median radius of the points where opaque
    orbit rays reach ``T = 0.9``, found here by an independent fine quadrature (4000 steps along each impact
    parameter ``b``; the field is radial, so a ray's crossing radius depends on ``b`` alone)."""
    renderer = _blob_renderer()
    renderer.field.density = lambda x: 40.0 * torch.relu(0.5 - x.norm(dim=-1))
    renderer.estimator.update(renderer.field.density, warmup=True)
    mesh, level = extract_mesh(renderer, resolution=64, max_faces=4000)
    b = np.linspace(0.0, 0.5, 501)[:, None]
    u = np.linspace(-0.5, 0.5, 4001)
    u = (u[:-1] + u[1:]) / 2
    tau = np.cumsum(40.0 * np.maximum(0.5 - np.sqrt(b**2 + u**2), 0.0) * (u[1] - u[0]), axis=1)
    first = (tau > -np.log(SURFACE_TRANSMITTANCE)).argmax(axis=1)
    crossing_radius = np.sqrt(b[:, 0] ** 2 + u[first] ** 2)
    origins, dirs = (t.reshape(-1, 3).numpy() for t in orbit_cameras(8, elevation_deg=20.0, size=64).rays())
    impact = np.linalg.norm(np.cross(origins, dirs), axis=1)
    opaque = np.interp(impact, b[:, 0], tau[:, -1], right=0.0) > np.log(2.0)
    expected = float(np.median(np.interp(impact[opaque], b[:, 0], crossing_radius)))
    assert abs(float(np.linalg.norm(mesh.vertices, axis=1).mean()) - expected) < 0.01
    assert level == pytest.approx(40.0 * (0.5 - expected), abs=0.4)


def test_enclosed_cavities_are_filled_and_through_holes_kept() -> None:
    """A hollow shell meshes as one outer surface (not two); a tube's bore, open to the border, stays open."""
    x = np.linspace(-1, 1, 40)
    px, py, pz = np.meshgrid(x, x, x, indexing="ij")
    r = np.sqrt(px**2 + py**2 + pz**2)
    shell = np.where((r > 0.4) & (r < 0.7), 10.0, 0.0)  # solid between 0.4 and 0.7, empty inside
    filled = fill_cavities(shell, 5.0)
    assert (filled[r < 0.3] > 5.0).all() and (filled[r > 0.8] < 5.0).all()
    verts, faces, _, _ = measure.marching_cubes(filled, level=5.0)
    assert len(trimesh.Trimesh(verts, faces).split(only_watertight=False)) == 1
    verts, faces, _, _ = measure.marching_cubes(shell, level=5.0)
    assert len(trimesh.Trimesh(verts, faces).split(only_watertight=False)) == 2  # what it fixes
    cracked = shell.copy()
    cracked[19:21, 19:21, 20:] = 0.0  # a channel from the cavity out through the shell: not enclosed any more
    assert np.array_equal(fill_cavities(cracked, 5.0), cracked)
    rho = np.sqrt(px**2 + pz**2)
    tube = np.where((rho > 0.3) & (rho < 0.7), 10.0, 0.0)  # the bore runs along y to the border
    assert np.array_equal(fill_cavities(tube, 5.0), tube)


def _cracked_cube() -> tuple[np.ndarray, ...]:
    """A solid cube (density 10) with a slit inside, open to the outside only through a bent channel; returns
    the grid, the cube, the slit and the channel's last leg (masks), the coordinates and the spacing."""
    x = np.linspace(-1, 1, 41)
    px, py, pz = np.meshgrid(x, x, x, indexing="ij")
    cube = np.where((abs(px) < 0.7) & (abs(py) < 0.7) & (abs(pz) < 0.7), 10.0, 0.0)
    slit = (abs(px) < 0.3) & (abs(py) < 0.06) & (abs(pz) < 0.3)
    rise = (abs(px) < 0.06) & (abs(py) < 0.06) & (pz >= 0.0) & (pz <= 0.45)  # up from the slit, inside
    leg = (px >= 0.0) & (abs(py) < 0.06) & (abs(pz - 0.45) < 0.06)  # then straight out along +x
    return np.where(slit | rise | leg, 0.0, cube), cube, slit, leg, (px, py, pz), np.full(3, x[1] - x[0])


def test_unseen_inside_is_filled_and_what_a_view_sees_kept() -> None:
    """The cracked cube's slit is filled; the channel's straight leg to the border (seen along x) and a bore
    along y stay open; nothing outside changes."""
    cracked, cube, slit, leg, (px, _, pz), h = _cracked_cube()
    assert np.array_equal(fill_cavities(cracked, 5.0), cracked)  # connected to the outside: not a cavity
    filled = fill_unseen_voxels(cracked, 5.0, h)
    assert (filled[slit] > 5.0).all() and (filled[leg] < 5.0).all()
    assert np.array_equal(filled[cube == 0], cracked[cube == 0])
    rho = np.sqrt(px**2 + pz**2)
    tube = np.where((rho > 0.3) & (rho < 0.7), 10.0, 0.0)
    assert np.array_equal(fill_unseen_voxels(tube, 5.0, h), tube)


def test_empty_field_and_absurd_settings_are_one_line_errors(tmp_path: Path) -> None:
    empty = _blob_renderer(empty=True)
    with pytest.raises(UsageError, match="empty"):
        extract_mesh(empty, resolution=32)
    with pytest.raises(UsageError, match="resolution"):
        extract_mesh(empty, resolution=100000)
    haze = _blob_renderer()
    haze.field.density = lambda x: torch.full(x.shape[:-1], 5.0)  # opaque rays, but no surface in them
    haze.estimator.update(haze.field.density, warmup=True)
    with pytest.raises(UsageError, match="no surface"):
        extract_mesh(haze, resolution=32)
    with pytest.raises(UsageError, match="empty mesh"):
        write_glb(trimesh.Trimesh(), tmp_path / "x.glb")
    assert not (tmp_path / "x.glb").exists()


def test_glb_obj_files_reopen_with_the_same_counts(blob: tuple[object, trimesh.Trimesh], tmp_path: Path) -> None:
    renderer, mesh = blob
    textured = bake_texture(mesh, renderer.field, size=128)
    colored = vertex_colored(mesh, renderer.field)
    for m, name in ((textured, "model.glb"), (colored, "model_vertex_color.glb")):
        write_glb(m, tmp_path / name)
        back = trimesh.load(tmp_path / name, force="mesh")
        assert (len(back.vertices), len(back.faces)) == (len(m.vertices), len(m.faces))
        assert _faces_outward(back)
    files = write_obj(textured, tmp_path / "model.obj")
    assert {p.suffix for p in files} == {".obj", ".mtl", ".png"}
    back = trimesh.load(tmp_path / "model.obj", force="mesh")
    assert len(back.faces) == len(textured.faces) and back.visual.kind == "texture" and _faces_outward(back)


@pytest.mark.skipif(validator_missing() is not None, reason=f"glTF validator unavailable: {validator_missing()}")
def test_every_glb_passes_the_khronos_validator(blob: tuple[object, trimesh.Trimesh], tmp_path: Path) -> None:
    renderer, mesh = blob
    for m, name in (
        (bake_texture(mesh, renderer.field, 128), "t.glb"),
        (vertex_colored(mesh, renderer.field), "v.glb"),
    ):
        report = validate_gltf(write_glb(m, tmp_path / name))
        assert report["issues"]["numErrors"] == 0, report["issues"]["messages"]


def test_turntable_video_and_contact_sheet(blob: tuple[object, trimesh.Trimesh], tmp_path: Path) -> None:
    renderer, mesh = blob
    frames = turntable_frames(vertex_colored(mesh, renderer.field), n_frames=4, size=16)
    assert frames.shape == (4, 16, 16, 3) and frames.dtype.name == "uint8"
    video = write_video(frames, tmp_path / "turntable.mp4", fps=4)
    assert video.suffix in (".mp4", ".gif") and video.stat().st_size > 0
    sheet = contact_sheet(frames, tmp_path / "sheet.png", columns=2)
    import imageio.v3 as iio

    assert iio.imread(sheet).shape == (32, 32, 3)
    with pytest.raises(UsageError):
        turntable_frames(mesh, n_frames=0)


def test_turntable_shows_the_mesh_colours_turning_on_white() -> None:
    """A box red on its +x half and blue on its -x half: seen from +x it is red, half a turn later blue."""
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0)).subdivide().subdivide()
    red = np.asarray(box.vertices)[:, 0] > 0
    colours = np.where(red[:, None], [220, 30, 30, 255], [30, 30, 220, 255]).astype(np.uint8)
    box.visual = trimesh.visual.ColorVisuals(box, vertex_colors=colours)
    frames = turntable_frames(box, n_frames=4, size=64, distance=3.0).astype(int)
    assert (frames[:, 0, 0] == 255).all()  # the corner is the white background
    object_pixels = [(f < 250).any(-1) for f in frames]
    redder = [((f[..., 0] > f[..., 2]) & m).sum() / m.sum() for f, m in zip(frames, object_pixels, strict=True)]
    assert all(m.sum() > 300 for m in object_pixels)
    assert redder[1] > 0.9 and redder[3] < 0.1  # frames 1 and 3 look from +x and -x (y up)


def test_extract_mesh_fills_the_unseen_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    cracked, *_, h = _cracked_cube()
    origin = np.full(3, -1.0)
    monkeypatch.setattr(export_mesh, "density_grid", lambda renderer, resolution: (cracked, origin, h))
    volume = {
        fill: extract_mesh(None, 41, threshold=5.0, max_faces=100000, fill_unseen=fill)[0].volume
        for fill in (True, False)
    }
    slit_volume = 0.6 * 0.12 * 0.6
    assert volume[True] - volume[False] > 0.5 * slit_volume
