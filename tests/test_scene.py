"""Scene: hash grid, cameras, quadrature, occupancy marching, renderer, backend choice, CUDA parity."""

from __future__ import annotations

import math

import pytest
import torch

from uni3d.errors import UsageError
from uni3d.scene import (
    CameraSampler,
    FieldConfig,
    HashGridConfig,
    OccupancyGrid,
    TorchHashGrid,
    build_renderer,
    orbit_cameras,
    resolve_backend,
)
from uni3d.scene.background import make_background
from uni3d.scene.shading import shade
from uni3d.scene.volume import accumulate, render_weights

SMALL = FieldConfig(encoding=HashGridConfig(n_levels=4, log2_table_size=12, base_resolution=4, max_resolution=32))
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_hash_grid_shapes_gradients_and_interpolation() -> None:
    grid = TorchHashGrid(
        HashGridConfig(n_levels=3, n_features=2, log2_table_size=10, base_resolution=4, max_resolution=16)
    )
    x = torch.rand(100, 3)
    out = grid(x)
    assert out.shape == (100, 6)
    out.square().sum().backward()
    assert grid.table.grad is not None and grid.table.grad.abs().sum() > 0
    with torch.no_grad():  # trilinear interpolation reproduces a linear function of the vertex coordinates
        grid.table.zero_()
        level0 = int(grid.level_size[0])
        r = int(grid.stride[0])
        idx = torch.arange(level0)
        grid.table[:level0, 0] = (idx % r).float()
        x = torch.rand(50, 3) * 0.8  # stay off the top cell, where (as in tinycudann) the index wraps
        expect = x[:, 0] * grid.scale[0] + 0.5
        assert torch.allclose(grid(x)[:, 0], expect, atol=1e-4)


def test_compiled_hash_grid_matches_eager_and_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile'd encoding = eager encoding (values and table gradients, two batch sizes); a failing
    compiler falls back to eager with a warning instead of stopping the run."""
    cfg = HashGridConfig(n_levels=4, log2_table_size=12, base_resolution=4, max_resolution=64)
    eager, compiled = TorchHashGrid(cfg), TorchHashGrid(cfg, compile=True)
    compiled.load_state_dict(eager.state_dict())
    for n in (300, 517):
        x = torch.rand(n, 3)
        for grid in (eager, compiled):
            grid.table.grad = None
            grid(x).square().sum().backward()
        assert torch.allclose(compiled(x), eager(x), atol=1e-6)
        assert torch.allclose(compiled.table.grad, eager.table.grad, atol=1e-6)

    def broken(*args: object, **kwargs: object) -> object:
        def call(x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("no C++ compiler")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    fallback = TorchHashGrid(cfg, compile=True)
    fallback.load_state_dict(eager.state_dict())
    x = torch.rand(10, 3)
    with pytest.warns(UserWarning, match="torch.compile of the hash grid failed"):
        out = fallback(x)
    assert torch.allclose(out, eager(x))


def test_bad_settings_raise_one_line_usage_errors() -> None:
    for bad in (lambda: HashGridConfig(n_levels=0), lambda: HashGridConfig(max_resolution=10**6)):
        with pytest.raises(UsageError):
            bad()
    with pytest.raises(UsageError, match="unknown scene backend"):
        resolve_backend("vulkan")
    with pytest.raises(UsageError):
        make_background("plaid")
    with pytest.raises(UsageError):
        OccupancyGrid(resolution=100000)
    with pytest.raises(UsageError):
        orbit_cameras(0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU choice")
def test_auto_backend_is_torch_without_cuda_and_cuda_is_refused() -> None:
    assert resolve_backend("auto") == "torch"
    with pytest.raises(UsageError, match="needs CUDA"):
        resolve_backend("cuda")


def test_camera_convention_y_up_looking_at_origin() -> None:
    cams = orbit_cameras(4, elevation_deg=0.0, distance=3.0, size=9)
    assert torch.allclose(cams.c2w[0, :3, 3], torch.tensor([0.0, 0.0, 3.0]), atol=1e-6)  # azimuth 0 is +z
    assert torch.allclose(cams.c2w[1, :3, 3], torch.tensor([3.0, 0.0, 0.0]), atol=1e-5)  # azimuth 90 is +x
    origins, dirs = cams.rays()
    assert torch.allclose(dirs[:, 4, 4], -torch.nn.functional.normalize(origins[:, 4, 4], dim=-1), atol=1e-6)
    assert dirs[0, 0, 4, 1] > 0 and dirs[0, 4, 8, 0] > 0  # top row looks up, right column looks right
    rand = CameraSampler(distance=(2.0, 2.0), center_jitter=0.1).sample(8, 16, torch.Generator().manual_seed(0))
    assert torch.allclose(rand.c2w[:, :3, 3].norm(dim=-1), torch.full((8,), 2.0))


def test_quadrature_matches_closed_form_for_constant_density() -> None:
    n, sigma = 200, 2.0
    t = torch.linspace(0, 1, n + 1)
    rays = torch.zeros(n, dtype=torch.long)
    w, trans = render_weights(torch.full((n,), sigma), t[:-1], t[1:], rays, 1)
    assert math.isclose(float(accumulate(w, None, rays, 1)), 1 - math.exp(-sigma), rel_tol=1e-5)
    assert math.isclose(float(trans[-1]), math.exp(-sigma * (1 - 1 / n)), rel_tol=1e-5)
    two = torch.cat([rays, rays + 1])  # a second ray restarts at T = 1
    w2, _ = render_weights(torch.full((2 * n,), sigma), t[:-1].repeat(2), t[1:].repeat(2), two, 2)
    assert torch.allclose(accumulate(w2, None, two, 2), torch.full((2, 1), 1 - math.exp(-sigma)), atol=1e-5)


def test_occupancy_marching_skips_empty_space() -> None:
    grid = OccupancyGrid(bound=1.0, resolution=16, render_steps=64)
    origins = torch.tensor([[0.0, 0.0, 3.0], [0.0, 5.0, 3.0]])
    dirs = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    rays, t0, _ = grid.sample(origins, dirs)
    assert set(rays.tolist()) == {0} and t0.min() >= 2.0 - grid.step_size  # second ray misses the box
    grid.update(lambda x: 100.0 * (x.norm(dim=-1) < 0.5).float(), warmup=True)
    rays, t0, t1 = grid.sample(origins, dirs)
    mid = (t0 + t1) / 2
    assert ((3 - mid).abs() < 0.5 + 2 / 16 * math.sqrt(3)).all()  # only near the occupied ball
    lo, hi = grid.occupied_bounds()
    assert (lo > -0.7).all() and (hi < 0.7).all()


@pytest.mark.parametrize("perturb", [False, True])
def test_front_to_back_marching_matches_one_full_march(perturb: bool) -> None:
    """Segmented marching with early stop keeps exactly the samples that pruning one full march keeps."""
    grid = OccupancyGrid(bound=1.0, resolution=16, render_steps=128)

    def sigma_fn(x: torch.Tensor) -> torch.Tensor:  # a dense shell (rays stop there) around a soft core
        r = x.norm(dim=-1)
        return 40.0 * ((r > 0.45) & (r < 0.55)).float() + 2.0 * (r < 0.3).float()

    grid.update(lambda x: sigma_fn(x) + 0.5 * (x.norm(dim=-1) < 0.8).float(), warmup=True)
    cams = orbit_cameras(3, size=12)
    o, d = (t.reshape(-1, 3) for t in cams.rays())
    torch.manual_seed(0)
    rays, t0, t1 = grid.sample(o, d, sigma_fn, perturb=perturb)
    torch.manual_seed(0)
    all_rays, a0, a1 = grid.sample(o, d, perturb=perturb)  # the full march, no pruning
    sigma = sigma_fn(o[all_rays] + ((a0 + a1) / 2)[:, None] * d[all_rays])
    _, trans = render_weights(sigma, a0, a1, all_rays, len(o))
    keep = (1 - torch.exp(-sigma * grid.step_size) > grid.alpha_thre) & (trans > grid.early_stop_eps)
    assert keep.sum() < 0.5 * len(keep)  # the shell stops most rays: the test exercises early stop
    assert torch.equal(rays, all_rays[keep])
    assert torch.allclose(t0, a0[keep]) and torch.allclose(t1, a1[keep])


@pytest.mark.parametrize("shading", ["albedo", "lambertian", "textureless"])
def test_renderer_outputs_and_backgrounds(shading: str) -> None:
    torch.manual_seed(0)
    renderer = build_renderer(
        SMALL, backend="torch", background="solid", shading=shading, grid_resolution=16, render_steps=64
    )
    renderer.estimator.update(renderer.field.density, warmup=True)
    cams = orbit_cameras(2, size=8)
    images = renderer.render_images(cams, with_normals=True)
    assert images["rgb"].shape == (2, 8, 8, 3) and images["opacity"].shape == (2, 8, 8, 1)
    assert images["normal"].shape == (2, 8, 8, 3)
    assert images["opacity"][:, 4, 4].min() > 0.9  # the initial blob is opaque at the centre
    assert (images["opacity"][:, 0, 0] < images["opacity"][:, 4, 4] - 0.3).all()  # thinner towards the corner
    renderer.train()
    o, d = (t.reshape(-1, 3) for t in cams.rays())
    out = renderer(o, d)
    out.rgb.mean().backward()
    assert renderer.field.encoding.table.grad is not None


def test_shading_and_progressive_levels() -> None:
    albedo = torch.full((2, 3), 0.5)
    normals = torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]])
    light = torch.tensor([0.0, 1.0, 0.0])
    lit = shade(albedo, normals, light, "lambertian", ambient=0.2)
    assert torch.allclose(lit[:, 0], torch.tensor([0.5, 0.1]))
    assert torch.allclose(shade(albedo, normals, light, "textureless", ambient=0.2)[:, 0], torch.tensor([1.0, 0.2]))
    renderer = build_renderer(SMALL, backend="torch")
    field = renderer.field
    x = torch.rand(10, 3) - 0.5
    with torch.no_grad():
        field.encoding.table.normal_()
        full = field.density(x)
        field.set_active_levels(1)
        coarse = field.density(x)
    assert not torch.allclose(full, coarse) and field.level_mask.tolist() == [1.0, 0.0, 0.0, 0.0]


@cuda_only
def test_tcnn_encoding_matches_torch_encoding() -> None:
    pytest.importorskip("tinycudann")
    from uni3d.scene.hashgrid import TcnnHashGrid

    cfg = HashGridConfig(n_levels=8, log2_table_size=14, base_resolution=8, max_resolution=256)
    ref = TorchHashGrid(cfg).cuda()
    fast = TcnnHashGrid(cfg).cuda()
    with torch.no_grad():
        ref.table.copy_(fast.encoding.params.view(-1, cfg.n_features)[: ref.table.shape[0]].float())
    x = torch.rand(4096, 3, device="cuda")
    assert torch.allclose(fast(x), ref(x), atol=1e-3)


@cuda_only
def test_nerfacc_rendering_matches_torch_rendering() -> None:
    pytest.importorskip("nerfacc")
    pytest.importorskip("tinycudann")
    torch.manual_seed(0)
    cuda = build_renderer(SMALL, backend="cuda", background="solid").cuda().eval()
    ref = build_renderer(SMALL, backend="torch", background="solid").cuda().eval()
    ref.field.load_state_dict(cuda.field.state_dict(), strict=False)
    with torch.no_grad():
        ref.field.encoding.table.copy_(
            cuda.field.encoding.encoding.params.view(-1, 2)[: ref.field.encoding.table.shape[0]]
        )
    for r in (cuda, ref):
        r.estimator.update(r.field.density, warmup=True)
    o, d = (t.reshape(-1, 3).cuda() for t in orbit_cameras(2, size=32).rays())
    a, b = cuda(o, d), ref(o, d)
    assert (a.opacity - b.opacity).abs().mean() < 0.02 and (a.rgb - b.rgb).abs().mean() < 0.02
