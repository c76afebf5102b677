"""EDM-preconditioned denoiser and SiD's one-step generator.

``D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)`` (EDM eq. 7, Table 1, :func:`uni3d.diffusion.edm.preconditioning`;
VP / VE coefficients for EDM's baseline pickles: :mod:`uni3d.models.edm.precond`). ``F`` is uni3d's
:class:`~uni3d.models.edm.unet.UNet` or one of EDM's networks (:mod:`uni3d.models.edm.networks`), same interface.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from uni3d.diffusion.edm import Preconditioning
from uni3d.models.edm.networks import DhariwalUNet, SongUNet
from uni3d.models.edm.precond import EDM, Precond
from uni3d.models.edm.unet import UNet, UNetConfig


def _columns(x: Tensor, sigma: Tensor, sigma_data: float, precond: Precond = EDM) -> tuple[Preconditioning, Tensor]:
    """EDM coefficients as ``[B, 1, 1, 1]`` in the dtype of ``x``, and ``c_noise [B]``."""
    pre = precond.coefficients(sigma.reshape(-1).to(x.dtype), sigma_data)
    col = Preconditioning(*(c.reshape(-1, 1, 1, 1) for c in (pre.c_skip, pre.c_out, pre.c_in, pre.c_noise)))
    return col, pre.c_noise


class EDMDenoiser(nn.Module):
    """A :class:`UNet` (or an EDM network) inside EDM's preconditioning; ``sigma`` is ``[B]`` (VE units).

    ``sigma_data`` is also the fake score's loss scale when the preconditioning is ``vp`` / ``ve``.
    """

    def __init__(self, net: UNet | SongUNet | DhariwalUNet, sigma_data: float = 0.5, precond: Precond = EDM) -> None:
        super().__init__()
        self.net = net
        self.sigma_data = sigma_data
        self.precond = precond

    @classmethod
    def build(cls, cfg: UNetConfig, sigma_data: float = 0.5) -> EDMDenoiser:
        return cls(UNet(cfg), sigma_data)

    @property
    def num_classes(self) -> int:
        return self.net.cfg.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of the images the network is made for."""
        cfg = self.net.cfg
        return cfg.in_channels, cfg.resolution, cfg.resolution

    def with_features(self, x: Tensor, sigma: Tensor, class_labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(D(x; sigma), bottleneck features)``: one pass gives the denoiser and the ratio head's input."""
        col, c_noise = _columns(x, sigma, self.sigma_data, self.precond)
        out, bottleneck = self.net(col.c_in * x, c_noise, class_labels)
        out = out[:, : x.shape[1]]  # iDDPM networks also output a variance: dropped, as in EDM's iDDPMPrecond
        return col.c_skip * x + col.c_out * out.to(x.dtype), bottleneck

    def forward(self, x: Tensor, sigma: Tensor, class_labels: Tensor | None = None) -> Tensor:
        return self.with_features(x, sigma, class_labels)[0]

    def bottleneck(self, x: Tensor, sigma: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """Encoder features only (no decoder pass), as in :meth:`with_features`."""
        col, c_noise = _columns(x, sigma, self.sigma_data, self.precond)
        return self.net.encode(col.c_in * x, self.net.embedding(c_noise, class_labels))[0]


class OneStepGenerator(nn.Module):
    """SiD's generator ``G(z) = D(sigma_init z; sigma_init)``, initialised as a copy of the teacher."""

    def __init__(self, teacher: EDMDenoiser, sigma_init: float) -> None:
        super().__init__()
        self.denoiser = copy.deepcopy(teacher)
        self.sigma_init = sigma_init

    def forward(self, z: Tensor, class_labels: Tensor | None = None) -> Tensor:
        sigma = torch.full((z.shape[0],), self.sigma_init, dtype=z.dtype, device=z.device)
        return self.denoiser(self.sigma_init * z, sigma, class_labels)
