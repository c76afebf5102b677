"""Fit a radiance field to posed images with the photometric loss only.

Each step draws random training rays, renders them over a random per-ray background colour and minimises
``|| C_field - (C_gt + (1 - alpha_gt) * bg) ||^2`` (premultiplied ground truth), so opacity is learned from
colour alone. Adam with Instant-NGP's settings; the occupancy grid refreshes every ``grid_every`` steps;
hash-grid levels unmask linearly over the first half of the run. The first fifth of the run draws
``warmup_rays`` rays per step (cheap steps while the initial blob is still foggy and the grid coarse).
A share ``error_sampling`` of each step's rays is drawn in proportion to each pixel's last squared error
(:class:`ErrorMap`), so that the few views that see into a cavity are not outvoted by the easy outside.

Faces that are uniformly shaded (turned away from the light) carry no photometric signal about their depth, and
the photometric loss alone lets them sink into the shape. ``surface_pull`` adds a small balloon force
(Cohen, 1991) toward the photo hull (Kutulakos and Seitz, 2000), see :func:`expected_termination`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from uni3d.errors import UsageError
from uni3d.scene.field import FieldConfig
from uni3d.scene.hashgrid import HashGridConfig
from uni3d.scene.occupancy import ray_aabb
from uni3d.scene.optim import field_optimizer, unmask_levels
from uni3d.scene.renderer import RenderOutput, VolumeRenderer, build_renderer
from uni3d.tasks.reconstruct.views import ViewSet


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
    surface_pull: float = 6e-4
    error_sampling: float = 0.5
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
        if not 0 <= self.surface_pull < 1:
            raise UsageError(f"surface pull must be in [0, 1), got {self.surface_pull}")
        if not 0 <= self.error_sampling <= 1:
            raise UsageError(f"error sampling share must be in [0, 1], got {self.error_sampling}")


@dataclass
class FitResult:
    renderer: VolumeRenderer
    steps: int
    seconds: float
    losses: list[float]
    """The photometric loss of each step (without the surface pull), over its uniformly drawn rays: comparable
    between steps and runs whatever the error-sampling share."""


def run_progress(step: int, steps: int, elapsed: float, budget_s: float | None) -> float:
    """How far the run is, in [0, 1]: the larger of the step and time fractions, so the schedules (level unmasking,
    warm-up rays) finish whichever limit ends the run (with the time fraction alone, a fast machine that hit the step
    cap at a quarter of the budget had fitted without the finest hash-grid levels)."""
    frac = step / steps
    if budget_s:
        frac = max(frac, elapsed / budget_s)
    return min(frac, 1.0)


class ErrorMap:
    """The last squared error measured at each training pixel, and a ray sampler that follows it: error-guided
    sampling as in Instant-NGP's error map (Muller et al., 2022, sec. 5.2), per pixel. Pixels not yet drawn hold the
    first step's mean error, so the map starts out uniform."""

    def __init__(self, n_pixels: int, device: torch.device) -> None:
        self.n_pixels, self.device = n_pixels, device
        self.error: torch.Tensor | None = None

    def draw(self, n_rays: int, share: float) -> tuple[torch.Tensor, int]:
        """``n_rays`` pixel indices and how many of them lead uniformly drawn: ``round(share * n_rays)`` are drawn
        with probability proportional to the error (with replacement) after the uniform ones."""
        n_err = round(share * n_rays) if self.error is not None else 0
        uniform = torch.randint(0, self.n_pixels, (n_rays - n_err,), device=self.device)
        if n_err == 0:
            return uniform, n_rays
        weighted = torch.multinomial(self.error.clamp_min(1e-12), n_err, replacement=True)
        return torch.cat([uniform, weighted]), n_rays - n_err

    def update(self, idx: torch.Tensor, sq_error: torch.Tensor) -> None:
        """Record ``sq_error (N,)`` at pixels ``idx (N,)`` (the last write wins where a pixel was drawn twice)."""
        if self.error is None:
            self.error = torch.full((self.n_pixels,), float(sq_error.mean()), device=self.device)
        self.error[idx] = sq_error


def expected_termination(out: RenderOutput, t_exit: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Mean over the ground truth's foreground of each ray's expected termination distance
    ``sum_i w_i t_i + (1 - sum_i w_i) t_exit`` (the light left over stops where the ray leaves the box), weighted
    by ``alpha_gt``. Minimising it moves the surface along each foreground ray toward its camera: a balloon
    force that only the photometric loss can stop, so the surface settles on the photo hull."""
    term = out.depth + (1 - out.opacity) * t_exit.unsqueeze(-1)
    return (alpha * term).sum() / alpha.sum().clamp_min(1.0)


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
    t_exit = ray_aabb(origins, dirs, cfg.field.bound)[1].clamp_min(0.0)
    opt = field_optimizer(renderer, cfg.lr)
    errors = ErrorMap(len(origins), device)
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
        frac = run_progress(step, cfg.steps, elapsed, cfg.time_budget_s)
        unmask_levels(field_, cfg.start_levels, frac)
        if step == 1 or step % cfg.grid_every == 0:
            renderer.estimator.update(field_.density, warmup=step == 1)
        n_rays = cfg.rays_per_step if frac > 0.2 else cfg.warmup_rays
        idx, n_uniform = errors.draw(n_rays, cfg.error_sampling)
        out = renderer(origins[idx], dirs[idx])
        target = rgb[idx] + (1 - alpha[idx]) * out.background
        sq_error = (out.rgb - target).square().mean(-1)
        errors.update(idx, sq_error.detach())
        loss = sq_error.mean()
        losses.append(sq_error[:n_uniform].mean().item() if n_uniform else loss.item())
        if cfg.surface_pull > 0:
            loss = loss + cfg.surface_pull * expected_termination(out, t_exit[idx], alpha[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress is not None and step % 50 == 0:
            progress(step, sum(losses[-50:]) / len(losses[-50:]))
    renderer.eval()
    return FitResult(renderer, step, time.perf_counter() - start, losses)
