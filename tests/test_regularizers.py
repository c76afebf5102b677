"""The text-to-3D regularizers on the surface: surface points from the render, 3D normal smoothness."""

from __future__ import annotations

import torch

from uni3d.scene.field import FieldConfig, RadianceField
from uni3d.scene.hashgrid import HashGridConfig
from uni3d.tasks.text_to_3d.regularizers import normal_smoothness, surface_points


def _field(seed: int) -> RadianceField:
    torch.manual_seed(seed)
    cfg = FieldConfig(HashGridConfig(n_levels=4, log2_table_size=12, base_resolution=8, max_resolution=64), hidden=16)
    return RadianceField(cfg)


def test_surface_points_sit_at_the_expected_distance_of_opaque_rays() -> None:
    origins = torch.tensor([[0.0, 0.0, 3.0], [1.0, 0.0, 3.0], [0.0, 1.0, 3.0]])
    dirs = torch.tensor([[0.0, 0.0, -1.0]] * 3)
    opacity = torch.tensor([[1.0], [0.8], [0.3]])
    depth = torch.tensor([[2.5], [0.8 * 2.0], [0.3 * 1.0]])  # depth is sum w_i t_i: opacity x distance
    points = surface_points(origins, dirs, opacity, depth)
    assert torch.allclose(points, torch.tensor([[0.0, 0.0, 0.5], [1.0, 0.0, 1.0]]))  # the 0.3 ray is not opaque


def test_normal_smoothness_is_small_on_a_smooth_blob_and_large_on_a_rough_field() -> None:
    points = torch.nn.functional.normalize(torch.randn(256, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    points = 0.4 * points
    smooth = _field(0)
    torch.nn.init.zeros_(smooth.density_head[2].weight)  # density = the radially symmetric blob alone
    rough = _field(0)
    with torch.no_grad():
        rough.encoding.parameters().__next__().normal_(0, 1.0)  # large random hash features: bumpy density
        rough.density_head[2].weight.mul_(20)
    eps = 0.02
    s, r = normal_smoothness(smooth, points, eps).item(), normal_smoothness(rough, points, eps).item()
    assert s < 0.1 and r > 10 * s


def test_normal_smoothness_has_a_gradient_that_reduces_it_and_handles_no_points() -> None:
    field = _field(1)
    with torch.no_grad():
        field.density_head[2].weight.mul_(20)
    points = 0.4 * torch.nn.functional.normalize(
        torch.randn(128, 3, generator=torch.Generator().manual_seed(1)), dim=-1
    )
    opt = torch.optim.Adam(field.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        torch.manual_seed(2)
        loss = normal_smoothness(field, points, 0.02)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first
    assert normal_smoothness(field, torch.zeros(0, 3), 0.02).item() == 0.0
