"""How much memory the particles of a run take, checked before any work starts.

The estimate is an upper bound: per particle its hash tables and MLPs in float32 with their gradient and Adam's two
moments (16 bytes a parameter) and its occupancy grid; per particle drawn in a step, the activations its render keeps
for the backward pass (every ray of its views, ``render_steps`` samples each, the encoding and two hidden layers per
sample).
"""

from __future__ import annotations

import os

import torch

from uni3d.errors import UsageError
from uni3d.tasks.text_to_3d.config import GenerateConfig

GIB = 2**30


def field_bytes(cfg: GenerateConfig) -> int:
    """A particle's memory between steps: parameters with gradient and Adam's moments, its occupancy grid."""
    enc = cfg.field.encoding
    features = enc.n_levels * enc.n_features
    params = enc.n_levels * 2**enc.log2_table_size * enc.n_features + 4 * cfg.field.hidden * (features + 8)
    return 16 * params + 8 * cfg.grid_resolution**3


def step_bytes(cfg: GenerateConfig, render_size: int) -> int:
    """The activations one particle's render keeps for the backward pass at ``render_size``."""
    enc = cfg.field.encoding
    samples = cfg.views_per_step * render_size**2 * cfg.render_steps
    return samples * (enc.n_levels * enc.n_features + 2 * cfg.field.hidden) * 4 * 3


def available_bytes(device: str) -> int | None:
    """Free memory of ``device`` (CUDA: the device's, else the machine's); ``None`` where it cannot be read."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_particles_fit(cfg: GenerateConfig, render_size: int, device: str) -> None:
    """One-line error when the particles are estimated to need more memory than ``device`` has free: every
    particle's :func:`field_bytes`, and :func:`step_bytes` for those drawn each step. The prior's own memory comes on
    top, so this is a lower bound of what the run needs."""
    free = available_bytes(device)
    drawn = cfg.particles_per_step or cfg.particles
    need = cfg.particles * field_bytes(cfg) + drawn * step_bytes(cfg, render_size)
    if free is not None and need > free:
        raise UsageError(
            f"{cfg.particles} particles need about {need / GIB:.1f} GiB at {render_size} px, more than the "
            f"{free / GIB:.1f} GiB free on {device}; use fewer --particles, --particles-per-step or a smaller "
            "--render-size"
        )
