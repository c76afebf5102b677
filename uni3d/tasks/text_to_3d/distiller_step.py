"""The part of a text-to-3D step that a step-changing preset (:mod:`uni3d.tasks.text_to_3d.distillers`) replaces:
its noise (SDI's inverted input, DSD's path noise, CFD's object-attached noise), its teacher target (NFSD's,
LMC-SDS's) and its fake score (ASD's and DSD's prior at a later timestep), and what it trains beside the field
(LMC-SDS's corrective).

:class:`DistillerStep` holds the pieces a preset owns across steps (CFD's noise grids, LMC-SDS's corrective and the
latest pair it trains on); the run's own pieces (its seeded noise, its guided teacher, the render side) come from
the :class:`~uni3d.tasks.text_to_3d.trainer.TextTo3D` it serves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.profiler import record_function

from uni3d.engine import STAGE, Denoised
from uni3d.tasks.text_to_3d.corrective import ManifoldCorrective, corrective_loss, lmc_denoise
from uni3d.tasks.text_to_3d.distillers import (
    CFD_GRID,
    CFD_OPACITY,
    NFSD_NEGATIVE,
    Distiller,
    consistent_noise,
    inverted_input,
    nfsd_target,
    noise_grid,
    path_noise,
    shifted_fake,
    shifted_sigma,
)

if TYPE_CHECKING:  # the trainer imports this module
    from uni3d.tasks.text_to_3d.trainer import TextTo3D, Views


class DistillerStep:
    """``distiller``'s pieces of a step for ``run`` (built by the run, before its seeded noise is drawn)."""

    def __init__(self, distiller: Distiller, run: TextTo3D) -> None:
        self.distiller, self.run = distiller, run
        cfg, prior = run.cfg, run.prior
        channels, latent = int(prior.unet.config.in_channels), int(prior.unet.config.sample_size)
        lmc = distiller.teacher == "lmc"
        self.corrective = ManifoldCorrective(channels).to(run.device) if lmc else None
        self.lmc_pair: tuple[Tensor, Tensor, Tensor] | None = None
        """The latest generator pass's ``(x0, sigma, D_c)``: what the corrective trains on after it."""
        self.noise_grids: list[Tensor] = []
        if distiller.noise == "consistent":
            side = max(CFD_GRID, 2 * latent)  # finer than a latent pixel's footprint: neighbours rarely share a cell
            self.noise_grids = [
                noise_grid(cfg.seed, k, channels, resolution=side).to(run.device) for k in range(cfg.particles)
            ]

    def denoise(self, x0: Tensor, sigma: Tensor, v: Views) -> Denoised:
        """The run's :meth:`~TextTo3D.denoise` for this preset: SDI's inverted input, DSD's path noise, CFD's
        object-attached noise, NFSD's and LMC-SDS's targets, ASD's and DSD's shifted prior as the fake score."""
        d, run = self.distiller, self.run
        c, prior = run.cfg, run.prior
        n = len(x0)
        later = shifted_sigma(prior, sigma, c.resolved_t_min()) if d.fake == "shifted" else None
        if d.noise == "inverted":
            sigma, noise = inverted_input(prior, x0, sigma, v.cond, v.uncond)
        elif d.noise == "path":
            assert later is not None
            seeds = run.particle_seeds(v.particles, n)
            noise = path_noise(prior, seeds, later, v.cond, v.uncond, guidance=c.guidance_scale)
        elif d.noise == "consistent":
            noise = self.consistent_noise(x0, v)
        else:
            noise = run.noise(x0, v.particles)
        x_t = x0 + sigma.view(-1, 1, 1, 1) * noise
        if d.teacher == "nfsd":
            empty, negative = prior.embed([""] * n), prior.embed([c.negative_prompt or NFSD_NEGATIVE] * n)
            d_real = nfsd_target(prior, x0, x_t, sigma, (v.cond, empty, negative), guidance=c.guidance_scale)
        elif d.teacher == "lmc":
            assert self.corrective is not None
            with record_function(f"{STAGE}teacher"):
                d_real, d_cond = lmc_denoise(
                    prior,
                    self.corrective,
                    x0,
                    x_t=x_t,
                    sigma=sigma,
                    conditions=(v.cond, v.uncond),
                    guidance=c.guidance_scale,
                )
            self.lmc_pair = (x0.detach(), sigma, d_cond)
        else:
            d_real = run.teacher_denoise(x_t.detach(), sigma, v.cond, v.uncond)
        d_fake = None if later is None else shifted_fake(prior, x0, noise, sigma, later, v.cond)
        return Denoised(x_t=x_t, sigma=sigma, d_real=d_real, d_fake=d_fake)

    def consistent_noise(self, x0: Tensor, v: Views) -> Tensor:
        """CFD's object-attached noise of the step's renders (:func:`consistent_noise` per particle: its noise grid,
        its seeded noise image as the background)."""
        run = self.run
        assert run.seeded_noise is not None
        side, latent, blocks = run.size, x0.shape[-1], []
        for k, out, origins, dirs in zip(v.particles, v.renders, v.origins, v.dirs, strict=True):
            opacity, depth = out.opacity.detach().squeeze(-1), out.depth.detach().squeeze(-1)
            points = origins + (depth / opacity.clamp(min=1e-6)).unsqueeze(-1) * dirs
            n = len(points) // (side * side)
            background = run.seeded_noise[k].expand(n, -1, -1, -1)
            blocks.append(
                consistent_noise(
                    self.noise_grids[k],
                    background,
                    points.view(n, side, side, 3),
                    (opacity > CFD_OPACITY).view(n, side, side),
                    bound=run.cfg.field.bound,
                    latent=latent,
                )
            )
        return torch.cat(blocks)

    def corrective_loss(self) -> Tensor:
        """LMC-SDS's corrective loss on the latest generator pass's pair (:func:`corrective_loss`)."""
        assert self.corrective is not None
        assert self.lmc_pair is not None, "the corrective trains after the generator pass (generator-first)"
        x0, sigma, d_cond = self.lmc_pair
        return corrective_loss(self.corrective, x0, sigma, estimate=d_cond)
