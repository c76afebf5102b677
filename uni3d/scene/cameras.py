"""Pinhole cameras, orbit and random camera sampling, and ray generation.

Convention: world ``+y`` is up (glTF's up axis). A camera at elevation ``e`` (from the ``xz`` plane towards
``+y``), azimuth ``a`` (about ``+y``, from ``+z`` towards ``+x``) and distance ``r`` sits at
``r * (cos e sin a, sin e, cos e cos a)`` and looks at the origin (plus jitter). Camera frames are
OpenGL-style: camera ``-z`` is the viewing direction, ``+x`` right, ``+y`` up; ``c2w`` maps camera to world
coordinates. Pixel ``(row i, column j)`` shoots through ``((j + 0.5 - W/2) / f, -(i + 0.5 - H/2) / f, -1)``
with ``f = H / (2 tan(fov_y / 2))``; ray directions are unit length, so ray ``t`` is world distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from uni3d.errors import UsageError


@dataclass
class Cameras:
    """A batch of ``B`` cameras of one image size: ``c2w (B, 4, 4)``, ``fov_y (B,)`` in radians."""

    c2w: torch.Tensor
    fov_y: torch.Tensor
    height: int
    width: int

    def __post_init__(self) -> None:
        if not (1 <= self.height <= 4096 and 1 <= self.width <= 4096):
            raise UsageError(f"image size must be 1-4096 pixels per side, got {self.height}x{self.width}")

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, idx: int | slice | torch.Tensor) -> Cameras:
        c2w, fov = self.c2w[idx], self.fov_y[idx]
        return Cameras(c2w.view(-1, 4, 4), fov.view(-1), self.height, self.width)

    def resized(self, height: int, width: int) -> Cameras:
        """The same cameras with another image size (same field of view)."""
        return Cameras(self.c2w, self.fov_y, height, width)

    @property
    def focal(self) -> torch.Tensor:
        """Focal length in pixels, ``(B,)``."""
        return self.height / (2 * torch.tan(self.fov_y / 2))

    def rays(self) -> tuple[torch.Tensor, torch.Tensor]:
        """World-space ray ``origins, directions``, each ``(B, H, W, 3)``; directions are unit vectors."""
        dev, dtype = self.c2w.device, self.c2w.dtype
        i, j = torch.meshgrid(
            torch.arange(self.height, device=dev, dtype=dtype),
            torch.arange(self.width, device=dev, dtype=dtype),
            indexing="ij",
        )
        f = self.focal.view(-1, 1, 1)
        x = (j + 0.5 - self.width / 2) / f  # (B, H, W)
        y = -(i + 0.5 - self.height / 2) / f
        d_cam = torch.stack([x, y, -torch.ones_like(x)], -1)  # (B, H, W, 3)
        dirs = torch.einsum("bij,bhwj->bhwi", self.c2w[:, :3, :3], d_cam)
        dirs = torch.nn.functional.normalize(dirs, dim=-1)
        origins = self.c2w[:, None, None, :3, 3].expand_as(dirs)
        return origins, dirs


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
    """OpenGL camera-to-world matrices ``(B, 4, 4)`` for cameras at ``eye (B, 3)`` looking at ``target (B, 3)``."""
    up = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype, device=eye.device).expand_as(eye) if up is None else up
    back = torch.nn.functional.normalize(eye - target, dim=-1)  # camera +z
    right = torch.cross(up, back, dim=-1)
    # looking straight up or down: any right vector perpendicular to the view works
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    right = torch.where(degenerate, torch.tensor([1.0, 0.0, 0.0], dtype=eye.dtype, device=eye.device), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    cam_up = torch.cross(back, right, dim=-1)
    c2w = torch.eye(4, dtype=eye.dtype, device=eye.device).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, cam_up, back, eye
    return c2w


def spherical_to_position(
    elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor, distance: torch.Tensor
) -> torch.Tensor:
    """World positions ``(B, 3)`` for the angles (degrees) and distances of the module convention."""
    e, a = torch.deg2rad(elevation_deg), torch.deg2rad(azimuth_deg)
    return distance.unsqueeze(-1) * torch.stack([e.cos() * a.sin(), e.sin(), e.cos() * a.cos()], -1)


def orbit_cameras(
    n: int, elevation_deg: float = 15.0, distance: float = 3.0, fov_deg: float = 40.0, size: int = 128
) -> Cameras:
    """``n`` cameras evenly spaced in azimuth (starting at ``+z``) at a fixed elevation, looking at the origin."""
    if n < 1:
        raise UsageError(f"an orbit needs at least 1 camera, got {n}")
    azimuth = torch.arange(n, dtype=torch.float32) * (360.0 / n)
    eye = spherical_to_position(torch.full((n,), elevation_deg), azimuth, torch.full((n,), distance))
    return Cameras(look_at(eye, torch.zeros_like(eye)), torch.full((n,), math.radians(fov_deg)), size, size)


def sphere_cameras(
    n: int, distance: float = 3.0, fov_deg: float = 40.0, size: int = 128, offset: float = 0.5
) -> Cameras:
    """``n`` cameras on a Fibonacci sphere (even coverage of all directions), looking at the origin.

    ``offset`` shifts the spiral, so a different offset gives a disjoint set of views (held-out views).
    """
    if n < 1:
        raise UsageError(f"at least 1 view is needed, got {n}")
    k = torch.arange(n, dtype=torch.float64) + offset
    y = 1 - 2 * k / n
    azimuth = torch.rad2deg(k * math.pi * (3 - math.sqrt(5))) % 360
    elevation = torch.rad2deg(torch.asin(y.clamp(-1, 1)))
    eye = spherical_to_position(elevation.float(), azimuth.float(), torch.full((n,), distance))
    return Cameras(look_at(eye, torch.zeros_like(eye)), torch.full((n,), math.radians(fov_deg)), size, size)


@dataclass(frozen=True)
class CameraSampler:
    """Random cameras: uniform elevation/azimuth/distance/fov in the given ranges (degrees), plus jitter.

    ``center_jitter`` perturbs the look-at target (Gaussian, world units); ``up_jitter`` the up vector.
    """

    elevation_deg: tuple[float, float] = (-10.0, 60.0)
    azimuth_deg: tuple[float, float] = (-180.0, 180.0)
    distance: tuple[float, float] = (2.5, 3.5)
    fov_deg: tuple[float, float] = (35.0, 45.0)
    center_jitter: float = 0.0
    up_jitter: float = 0.0

    def sample(self, batch: int, size: int, generator: torch.Generator | None = None) -> Cameras:
        """``batch`` random cameras rendering ``size x size`` images."""
        if batch < 1:
            raise UsageError(f"camera batch must be at least 1, got {batch}")

        def uniform(lo_hi: tuple[float, float]) -> torch.Tensor:
            return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * torch.rand(batch, generator=generator)

        eye = spherical_to_position(uniform(self.elevation_deg), uniform(self.azimuth_deg), uniform(self.distance))
        target = self.center_jitter * torch.randn(batch, 3, generator=generator)
        up = torch.tensor([0.0, 1.0, 0.0]) + self.up_jitter * torch.randn(batch, 3, generator=generator)
        fov = torch.deg2rad(uniform(self.fov_deg))
        return Cameras(look_at(eye, target, up), fov, size, size)
