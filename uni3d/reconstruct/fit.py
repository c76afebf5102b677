"""Fit a radiance field to posed images with the photometric loss only.

Each step draws random training rays, renders them over a random per-ray background colour and minimises
``|| C_field - (C_gt + (1 - alpha_gt) * bg) ||^2`` (premultiplied ground truth), so opacity is learned from
colour alone. Adam with Instant-NGP's settings; the occupancy grid refreshes every ``grid_every`` steps;
hash-grid levels unmask linearly over the first half of the run. The first fifth of the run draws
``warmup_rays`` rays per step (cheap steps while the initial blob is still foggy and the grid coarse).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from uni3d.errors import UsageError
from uni3d.reconstruct.views import ViewSet
from uni3d.scene.field import FieldConfig, RadianceField
from uni3d.scene.hashgrid import HashGridConfig
from uni3d.scene.renderer import VolumeRenderer, build_renderer


@dataclass(frozen=True)
class FitConfig:
    """Optimisation settings; the run stops at ``steps`` or after ``time_budget_s`` seconds, whichever is first."""

    steps: int = 3000
    time_budget_s: float | None = None
    rays_per_step: int = 4096
    warmup_rays: int = 1024
    lr: float = 1e-2
    grid_every: int = 16
    start_levels: int = 4
    seed: int = 0
    backend: str = "auto"
    grid_resolution: int = 64
    render_steps: int = 256
    compile: bool = False
    field: FieldConfig = field(
        default_factory=lambda: FieldConfig(
            encoding=HashGridConfig(n_levels=8, log2_table_size=16, base_resolution=16, max_resolution=256),
            hidden=32,
            blob_density=4.0,
            blob_radius=0.3,
        )
    )

    def __post_init__(self) -> None:
        if self.steps < 1 or self.rays_per_step < 1 or self.lr <= 0:
            raise UsageError(f"fit needs positive steps, rays per step and learning rate, got {self}")


@dataclass
class FitResult:
    renderer: VolumeRenderer
    steps: int
    seconds: float
    losses: list[float]


def field_optimizer(renderer: VolumeRenderer, lr: float) -> torch.optim.Adam:
    """Adam with Instant-NGP's settings: ``betas = (0.9, 0.99)``, ``eps = 1e-15``, weight decay ``1e-6`` on the
    MLPs and background only (never on the hash tables)."""
    grid_params = list(renderer.field.encoding.parameters())
    other = [p for n, p in renderer.named_parameters() if not n.startswith("field.encoding.") and p.requires_grad]
    return torch.optim.Adam(
        [{"params": grid_params}, {"params": other, "weight_decay": 1e-6}], lr=lr, betas=(0.9, 0.99), eps=1e-15
    )


def unmask_levels(field_: RadianceField, start_levels: int, progress: float) -> None:
    """Progressive unmasking: ``start_levels`` levels at ``progress = 0``, all of them from ``progress = 1/2``."""
    field_.set_active_levels(start_levels + round(2 * progress * (field_.n_levels - start_levels)))


def fit_field(views: ViewSet, cfg: FitConfig, progress: Callable[[int, float], None] | None = None) -> FitResult:
    """Fit a fresh field to ``views``; ``progress(step, loss)`` is called every 50 steps."""
    torch.manual_seed(cfg.seed)
    renderer = build_renderer(
        cfg.field,
        backend=cfg.backend,
        background="random",
        grid_resolution=cfg.grid_resolution,
        render_steps=cfg.render_steps,
        compile=cfg.compile,
    )
    device = next(renderer.parameters()).device
    origins, dirs = (t.reshape(-1, 3).to(device) for t in views.cameras.rays())
    rgb, alpha = views.rgb.reshape(-1, 3).to(device), views.alpha.reshape(-1, 1).to(device)
    opt = field_optimizer(renderer, cfg.lr)
    field_ = renderer.field
    renderer.train()
    losses: list[float] = []
    start = time.perf_counter()
    step = 0
    for step in range(1, cfg.steps + 1):
        elapsed = time.perf_counter() - start
        if cfg.time_budget_s is not None and elapsed > cfg.time_budget_s:
            step -= 1
            break
        frac = elapsed / cfg.time_budget_s if cfg.time_budget_s else step / cfg.steps
        unmask_levels(field_, cfg.start_levels, frac)
        if step == 1 or step % cfg.grid_every == 0:
            renderer.estimator.update(field_.density, warmup=step == 1)
        n_rays = cfg.rays_per_step if frac > 0.2 else cfg.warmup_rays
        idx = torch.randint(0, len(origins), (n_rays,), device=device)
        out = renderer(origins[idx], dirs[idx])
        target = rgb[idx] + (1 - alpha[idx]) * out.background
        loss = torch.nn.functional.mse_loss(out.rgb, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if progress is not None and step % 50 == 0:
            progress(step, sum(losses[-50:]) / len(losses[-50:]))
    renderer.eval()
    return FitResult(renderer, step, time.perf_counter() - start, losses)
