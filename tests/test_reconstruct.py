"""Proof on real geometry: a pyvista example mesh rendered, fitted (short), exported and measured."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from uni3d.cli import reconstruct as scene_cli
from uni3d.errors import UsageError
from uni3d.scene.occupancy import ray_aabb
from uni3d.tasks.reconstruct.fit import ErrorMap, FitConfig, expected_termination, fit_field, run_progress
from uni3d.tasks.reconstruct.meshes import load_mesh
from uni3d.tasks.reconstruct.metrics import chamfer, psnr
from uni3d.tasks.reconstruct.sections import main as sections_main
from uni3d.tasks.reconstruct.sections import section_lines
from uni3d.tasks.reconstruct.views import render_views

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pyvista") is None,
    reason="example meshes come from the pyvista wheel (pip install --no-deps pyvista)",
)


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    scene_cli.add_commands(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_real_mesh_loads_normalised_and_renders_with_masks() -> None:
    source = load_mesh("ant")
    assert len(source.mesh.faces) == 912 and abs(abs(source.mesh.vertices).max() - 0.7) < 1e-6
    views = render_views(source, 3, 32)
    assert views.rgb.shape == (3, 32, 32, 3) and views.alpha.shape == (3, 32, 32, 1)
    coverage = views.alpha.mean().item()
    assert 0.05 < coverage < 0.6 and views.alpha.max() == 1.0 and views.alpha[:, 0, 0].max() == 0.0
    assert (views.rgb <= views.alpha + 1e-6).all()  # premultiplied


def test_bad_meshes_and_settings_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.ply").write_text("")
    (tmp_path / "junk.obj").write_text("this is not a mesh\n")
    for spec in (str(tmp_path / "missing.ply"), str(tmp_path / "empty.ply"), str(tmp_path / "junk.obj")):
        with pytest.raises(UsageError) as err:
            load_mesh(spec)
        assert "\n" not in str(err.value)
    with pytest.raises(UsageError, match="view"):
        render_views(load_mesh("ant"), 0, 32)
    with pytest.raises(UsageError, match="views"):
        _cli(["reconstruct", "ant", "--views", "0", "--out", str(tmp_path / "r")])
    with pytest.raises(UsageError, match="marching-cubes"):
        _cli(["reconstruct", "ant", "--views", "2", "--mc-resolution", "4096", "--out", str(tmp_path / "r")])
    assert not (tmp_path / "r" / "model.glb").exists()


def test_short_fit_improves_photometric_loss_and_metrics_behave() -> None:
    torch.manual_seed(0)
    source = load_mesh("ant")
    views = render_views(source, 8, 32)
    result = fit_field(views, FitConfig(steps=40, rays_per_step=512, warmup_rays=512, grid_every=8))
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.5 * first
    assert psnr(views.rgb, views.rgb) == float("inf")
    same = chamfer(source.mesh, source.mesh, n=2000)[0]
    assert same < 0.01


def test_reconstruct_command_writes_outputs_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    argv = ["reconstruct", "ant", "--views", "6", "--holdout-views", "2", "--image-size", "32", "--steps", "40"]
    argv += ["--no-compile"]  # compiling costs more than these 40 steps (the compiled grid has its own test)
    argv += ["--rays", "512", "--mc-resolution", "48", "--max-faces", "2000", "--texture-size", "64"]
    argv += ["--no-fill-unseen", "--surface-pull", "0.001", "--error-sampling", "0.25"]
    assert _cli([*argv, "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "config.json").read_text())
    assert saved["fill_unseen"] is False and saved["fit"]["surface_pull"] == 0.001
    assert saved["fit"]["error_sampling"] == 0.25
    assert report["steps"] == 40 and report["backend"] == "torch"
    assert report["loss_last"] < report["loss_first"]
    assert 0 < report["chamfer_over_diagonal"] < 0.5 and report["psnr_holdout_db"] > 10
    for name in ("model.glb", "model_vertex_color.glb", "model.obj", "model.mtl", "contact_sheet.png", "metrics.json"):
        assert (out / name).is_file(), name
    assert (out / "turntable.mp4").is_file() or (out / "turntable.gif").is_file()


def test_schedules_finish_whichever_limit_ends_the_run() -> None:
    assert run_progress(3000, 3000, 60.0, 240.0) == 1.0  # step cap first: every level unmasked at the end
    assert run_progress(1000, 3000, 240.0, 240.0) == 1.0  # time budget first
    assert run_progress(750, 3000, 30.0, 240.0) == 0.25
    assert run_progress(300, 3000, 1.0, None) == 0.1
    views = render_views(load_mesh("ant"), 2, 16)
    cfg = FitConfig(steps=12, time_budget_s=3600.0, rays_per_step=64, warmup_rays=64, grid_every=4)
    field_ = fit_field(views, cfg).renderer.field
    assert field_.level_mask.sum().item() == field_.n_levels


def test_error_map_draws_in_proportion_to_the_last_error() -> None:
    torch.manual_seed(0)
    errors = ErrorMap(1000, torch.device("cpu"))
    idx, n_uniform = errors.draw(100, 0.5)
    assert idx.shape == (100,) and n_uniform == 100  # nothing measured yet: all uniform
    errors.update(torch.arange(1000), torch.ones(1000))
    errors.update(torch.arange(1000), torch.zeros(1000))  # the last write wins
    errors.update(torch.tensor([7, 9]), torch.tensor([1.0, 3.0]))
    idx, n_uniform = errors.draw(4000, 0.5)
    assert n_uniform == 2000
    weighted, uniform = idx[2000:], idx[:2000]
    assert set(weighted.tolist()) == {7, 9}
    assert 0.7 < (weighted == 9).float().mean().item() < 0.8  # 3 / (1 + 3)
    assert len(set(uniform.tolist())) > 800
    assert set(errors.draw(50, 1.0)[0].tolist()) <= {7, 9}
    with pytest.raises(UsageError, match="error sampling"):
        FitConfig(error_sampling=1.5)


def test_surface_pull_moves_the_surface_toward_the_cameras(tmp_path: Path) -> None:
    box = tmp_path / "box.obj"
    trimesh.creation.box(extents=(1.0, 1.0, 1.0)).export(box)
    views = render_views(load_mesh(str(box)), 4, 24)
    origins, dirs = (t.reshape(-1, 3) for t in views.cameras.rays())
    alpha = views.alpha.reshape(-1, 1)
    t_exit = ray_aabb(origins, dirs, 1.0)[1].clamp_min(0.0)
    depth = {}
    for pull in (0.0, 0.05):
        cfg = FitConfig(steps=30, rays_per_step=256, warmup_rays=256, grid_every=8, surface_pull=pull)
        renderer = fit_field(views, cfg).renderer
        with torch.no_grad():
            depth[pull] = expected_termination(renderer(origins, dirs), t_exit, alpha).item()
    assert depth[0.05] < depth[0.0] - 0.05  # 0.15 measured
    with pytest.raises(UsageError, match="surface pull"):
        FitConfig(surface_pull=-1.0)


def test_section_plot_traces_the_source_and_the_exports(tmp_path: Path) -> None:
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    lines = section_lines(box, 2)
    points = np.concatenate(lines)
    assert len(lines) == 1 and np.allclose(np.abs(points[:, :2]).max(0), 0.5) and np.allclose(points[:, 2], 0)
    assert section_lines(box.apply_translation((0, 0, 5)), 2) == []
    trimesh.creation.box(extents=(1.0, 1.0, 1.0)).export(tmp_path / "box.obj")
    trimesh.creation.icosphere(radius=0.7).export(tmp_path / "ball.obj")
    out = tmp_path / "sections.png"
    assert sections_main([str(tmp_path / "box.obj"), str(out), f"ball={tmp_path / 'ball.obj'}"]) == 0
    assert out.stat().st_size > 1000
    with pytest.raises(UsageError, match="no mesh file"):
        sections_main([str(tmp_path / "box.obj"), str(out), f"x={tmp_path / 'missing.obj'}"])
