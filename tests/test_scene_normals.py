"""Analytic density normals through the hash grid's Jacobian, and an occupancy grid that prunes the blob's halo."""

from __future__ import annotations

import pytest
import torch

from uni3d.scene.field import FieldConfig, RadianceField
from uni3d.scene.hashgrid import HashGridConfig
from uni3d.scene.renderer import build_renderer

SMALL = FieldConfig(
    encoding=HashGridConfig(n_levels=6, log2_table_size=12, base_resolution=4, max_resolution=64), hidden=16
)


@pytest.fixture
def field() -> RadianceField:
    torch.manual_seed(0)
    f = RadianceField(SMALL)
    with torch.no_grad():
        f.encoding.table.uniform_(-1, 1)  # a field with structure at every level, not the near-zero init
    f.set_active_levels(4)
    return f


def test_analytic_normals_equal_autograd_normals(field: RadianceField) -> None:
    x = (torch.rand(400, 3) * 1.6 - 0.8).requires_grad_(True)
    sigma, albedo, normals = field.forward_with_normals(x)
    (grad,) = torch.autograd.grad(field.density(x).log().sum(), x)
    torch.testing.assert_close(normals, -torch.nn.functional.normalize(grad, dim=-1), atol=1e-5, rtol=1e-5)
    ref_sigma, ref_albedo = field(x)
    torch.testing.assert_close(sigma, ref_sigma)
    torch.testing.assert_close(albedo, ref_albedo)
    close = (normals - field.normals(x, eps=1e-3)).norm(dim=-1) < 0.05  # the finite-difference fallback agrees
    assert close.float().mean() > 0.95


def test_analytic_normals_train_the_table_and_heads(field: RadianceField) -> None:
    _, _, normals = field.forward_with_normals(torch.rand(100, 3) - 0.5)
    normals[:, 1].sum().backward()
    assert field.encoding.table.grad.abs().sum() > 0
    assert field.density_head[0].weight.grad.abs().sum() > 0


def test_grid_min_density_prunes_the_fresh_blob_halo() -> None:
    torch.manual_seed(0)
    cfg = FieldConfig(encoding=SMALL.encoding, hidden=16, blob_density=5.0, blob_radius=0.35)
    fractions = {}
    for name, min_density in (("nerfacc", None), ("pruned", 1.0)):
        renderer = build_renderer(
            cfg, backend="torch", grid_resolution=16, render_steps=64, grid_min_density=min_density
        )
        renderer.estimator.update(renderer.field.density, warmup=True)
        fractions[name] = renderer.estimator.binary.float().mean().item()
        assert renderer.estimator.occupied(torch.zeros(1, 3)).item()  # the blob's centre stays occupied
    assert fractions["nerfacc"] == 1.0 and fractions["pruned"] < 0.25
