"""How a radiance field is optimised: Instant-NGP's Adam settings and progressive hash-grid level unmasking."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from uni3d.scene.field import RadianceField
from uni3d.scene.renderer import VolumeRenderer


def field_optimizer(renderers: VolumeRenderer | Sequence[VolumeRenderer], lr: float) -> torch.optim.Adam:
    """Adam with Instant-NGP's settings: ``betas = (0.9, 0.99)``, ``eps = 1e-15``, weight decay ``1e-6`` on the
    MLPs and background only (never on the hash tables). Several fields (particles) get two groups each: Adam's
    state is per parameter, so they are optimised independently."""
    groups = []
    for renderer in [renderers] if isinstance(renderers, VolumeRenderer) else renderers:
        grid_params = list(renderer.field.encoding.parameters())
        other = [p for n, p in renderer.named_parameters() if not n.startswith("field.encoding.") and p.requires_grad]
        groups += [{"params": grid_params}, {"params": other, "weight_decay": 1e-6}]
    return torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.99), eps=1e-15)


def unmask_levels(field_: RadianceField, start_levels: int, progress: float) -> None:
    """Progressive unmasking: ``start_levels`` levels at ``progress = 0``, all of them from ``progress = 1/2``."""
    field_.set_active_levels(start_levels + round(2 * progress * (field_.n_levels - start_levels)))
