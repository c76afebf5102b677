"""The 3-D scene: hash-grid radiance field, occupancy grid + ray marching, volume rendering, cameras.

Backends: pure PyTorch (default on CPU) or tinycudann + nerfacc (CUDA), picked by ``backend="auto"``.
"""

from uni3d.scene.backend import resolve_backend
from uni3d.scene.cameras import Cameras, CameraSampler, orbit_cameras, sphere_cameras
from uni3d.scene.field import FieldConfig, RadianceField
from uni3d.scene.hashgrid import HashGridConfig, TorchHashGrid
from uni3d.scene.occupancy import OccupancyGrid
from uni3d.scene.renderer import RenderOutput, VolumeRenderer, build_renderer

__all__ = [
    "CameraSampler",
    "Cameras",
    "FieldConfig",
    "HashGridConfig",
    "OccupancyGrid",
    "RadianceField",
    "RenderOutput",
    "TorchHashGrid",
    "VolumeRenderer",
    "build_renderer",
    "orbit_cameras",
    "resolve_backend",
    "sphere_cameras",
]
