"""Shading modes: ``albedo`` (c = a), ``lambertian`` (c = a (k_a + (1 - k_a) max(0, n.l))), ``textureless``
(the lambertian term on a white albedo), as in DreamFusion section 3.1."""

from __future__ import annotations

import torch

from uni3d.errors import UsageError

SHADING_MODES = ("albedo", "lambertian", "textureless")

LIGHT_DIR = (0.45, 0.8, 0.4)
"""World-space direction towards the key light of every uni3d scene: the ground-truth views of ``reconstruct``, the
shapes dataset's renders and the text-to-3D field's ``light: world`` shading (normalised by :func:`key_light`)."""


def key_light(dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """The unit vector ``(3,)`` towards :data:`LIGHT_DIR`."""
    return torch.nn.functional.normalize(torch.tensor(LIGHT_DIR, dtype=dtype), dim=0).to(device)


def check_shading(mode: str) -> str:
    """Return ``mode`` if known, else raise a one-line :class:`UsageError`."""
    if mode not in SHADING_MODES:
        raise UsageError(f"unknown shading mode {mode!r}; choose one of {', '.join(SHADING_MODES)}")
    return mode


def shade(
    albedo: torch.Tensor, normals: torch.Tensor | None, light_dir: torch.Tensor, mode: str, ambient: float = 0.3
) -> torch.Tensor:
    """Colours ``(N, 3)`` from ``albedo (N, 3)``, unit ``normals (N, 3)`` and unit ``light_dir`` ``(3,)`` or ``(N, 3)``."""
    if check_shading(mode) == "albedo":
        return albedo
    if normals is None:
        raise UsageError(f"shading mode {mode!r} needs normals")
    diffuse = (normals * light_dir).sum(-1, keepdim=True).clamp(min=0.0)
    light = ambient + (1 - ambient) * diffuse
    return albedo * light if mode == "lambertian" else light.expand_as(albedo)
