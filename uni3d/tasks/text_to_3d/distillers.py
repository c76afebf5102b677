"""Score distillers of the literature that change the text-to-3D step rather than the divergence.

Each one runs a loss preset of :mod:`uni3d.losses` (its form and time weighting) on a step whose noise, teacher
target or fake score it replaces. In VE units (``x_t = x0 + sigma n``, ``eps(x; sigma) = (x - D(x; sigma)) /
sigma``) the SDS gradient is ``w (x0 - D_s(x_t)) / sigma = w (eps_s(x_t) - n)`` and VSD's is
``w (D_p(x_t) - D_s(x_t)) / sigma``, so a method that prescribes an ``eps``-space residual is fed to those forms
through an effective ``d_real`` or ``d_fake`` that gives exactly that residual (``D_s``: the guided teacher).

- ``nfsd``, Noise-Free Score Distillation (Katzir et al., ICLR 2024, arXiv:2310.17590): the SDS residual without
  its noise term, ``delta_D + s delta_C`` with ``delta_C = eps_c - eps_u`` and ``delta_D = eps_u`` for
  ``t < 200`` (of 1000), else ``eps_u - eps_neg`` on a negative prompt of bad-image words: ``d_real`` is
  ``x0 - sigma (delta_D + s delta_C)``; loss preset ``sds``.
- ``asd``, Asynchronous Score Distillation (Ma et al., ECCV 2024, arXiv:2407.02040): VSD whose fake score is the
  frozen prior itself, prompt-conditioned and unguided, at a later timestep ``t + dt`` on the same noise,
  ``dt = floor(u 0.1 (t - t_min))``: residual ``eps_s(x_t; t) - eps_c(x0 + sigma_{t+dt} n; t + dt)``, i.e.
  ``d_fake = x0 - (sigma_t / sigma_{t+dt}) (x0 - D_c(x_{t+dt}))``; loss preset ``vsd``, no LoRA.
- ``sdi``, Score Distillation via Reparametrized DDIM (Lukoianov et al., NeurIPS 2024, arXiv:2405.15891): the
  noisy input is not ``x0`` plus fresh noise but the render carried up to ``t`` by DDIM inversion (10 steps,
  guidance -7.5, stochastic with ``eta = 0.3``), so ``n`` is the noise the render "came from"; ``t`` descends
  over the run; loss preset ``sds`` on that input.
- ``dsd``, Diverse Score Distillation (Xu et al., 2024, arXiv:2412.06780), its 3D approximation: each particle's
  fixed seed ``x_T`` is run down its DDIM path (guided, at most 10 steps) to ``t + dt``; the path's noise
  estimate ``n~`` replaces the fresh noise in ASD's residual, ``eps_s(x0 + sigma_t n~; t) - eps_c(x0 +
  sigma_{t+dt} n~; t + dt)``; ``t`` descends over the run.

- ``cfd``, Consistent Flow Distillation (Yan et al., ICLR 2025, arXiv:2501.05445): SDS whose noise is attached to
  the object, so that a surface point seen from two cameras gets the same noise: a fixed 3D white-noise grid per
  particle; each latent pixel's noise is the sum of the grid cells its rays hit on the surface, over the square
  root of their number (a sum of distinct i.i.d. ``N(0, 1)`` cells, scaled, is exactly ``N(0, 1)``); pixels
  that see no surface keep the particle's fixed background noise; ``t`` descends over the run.

- ``lmc-sds``, SDS with a Learned Manifold Corrective (Alldieck et al., ECCV 2024, arXiv:2401.05293), as
  reconstructed from its abstract: SDS's projection term ``(x0 - D_c) / sigma`` replaced by
  ``J_k^T (k(x0, t) - D_c) / sigma``, ``k`` a shallow network trained alongside to mimic the denoiser's
  timestep-dependent corruption (:mod:`uni3d.tasks.text_to_3d.corrective`); loss preset ``sds``.

A fake score of the prior at another timestep carries no camera and is never trained: these presets train no LoRA
and no ratio head (``lmc-sds`` trains its small corrective network).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from uni3d.diffusion.ddim import ddim_invert, ddim_path, epsilon
from uni3d.diffusion.units import classifier_free_guidance
from uni3d.losses import Preset, get_preset
from uni3d.tasks.text_to_3d.seeds import particle_generator

if TYPE_CHECKING:  # diffusers: the registry stays importable without it (settings, CLI help)
    from uni3d.models.stable_diffusion import StableDiffusionPrior

NFSD_NEGATIVE = "unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, dark, low-resolution, gloomy"
"""NFSD's negative prompt for ``delta_D`` (the embedded prior knows none of these words; see docs/text_to_3d.md)."""
NFSD_SPLIT_T = 200
"""Below this timestep (of 1000) NFSD's domain term is ``eps_u`` itself."""
SHIFT_RATIO = 0.1
"""ASD's and DSD's ``dt = floor(u SHIFT_RATIO (t - t_min))``."""
SDI_STEPS, SDI_GUIDANCE, SDI_ETA = 10, -7.5, 0.3
"""SDI's inversion: DDIM steps, guidance scale (away from the prompt), stochastic share."""
DSD_STEPS = 10
"""DSD's path: at most this many guided DDIM steps from the seed."""
CFD_GRID = 64
"""Fewest cells per side of CFD's 3D noise grid over the scene box (the trainer takes twice the latent side when
that is more, so that neighbouring latent pixels rarely share a cell)."""
CFD_OPACITY = 0.1
"""CFD's opacity above which a ray sees the surface."""


@dataclass(frozen=True)
class Distiller:
    """A step-changing score distiller: the loss preset it runs on and what it replaces.

    Attributes:
        name: the preset name users give.
        loss: the :mod:`uni3d.losses` preset whose form and weighting apply.
        teacher: ``guided`` (the teacher with CFG), ``nfsd`` (NFSD's noise-free target) or ``lmc`` (LMC-SDS's
            corrected target).
        fake: ``loss`` (as the loss preset: none for sds) or ``shifted`` (the frozen prior at ``t + dt``).
        noise: ``run`` (the run's fresh or seeded noise), ``inverted`` (SDI), ``path`` (DSD) or ``consistent``
            (CFD).
        t_schedule: the timestep schedule it uses unless the run sets one.
    """

    name: str
    loss: str
    teacher: str = "guided"
    fake: str = "loss"
    noise: str = "run"
    t_schedule: str = "uniform"

    @property
    def preset(self) -> Preset:
        """The loss preset."""
        return get_preset(self.loss)


DISTILLERS: dict[str, Distiller] = {
    "nfsd": Distiller("nfsd", "sds", teacher="nfsd"),
    "asd": Distiller("asd", "vsd", fake="shifted"),
    "sdi": Distiller("sdi", "sds", noise="inverted", t_schedule="descending"),
    "dsd": Distiller("dsd", "vsd", fake="shifted", noise="path", t_schedule="descending"),
    "cfd": Distiller("cfd", "sds", noise="consistent", t_schedule="descending"),
    "lmc-sds": Distiller("lmc-sds", "sds", teacher="lmc"),
}


def get_distiller(name: str) -> Distiller | None:
    """The distiller called ``name`` (any case), ``None`` for a plain loss preset."""
    return DISTILLERS.get((name or "").strip().lower())


def loss_preset(name: str) -> Preset:
    """The loss preset of a text-to-3D preset name: a distiller's, else the :mod:`uni3d.losses` preset itself."""
    distiller = get_distiller(name)
    return distiller.preset if distiller is not None else get_preset(name)


def nfsd_target(
    prior: StableDiffusionPrior,
    x0: Tensor,
    x_t: Tensor,
    sigma: Tensor,
    conditions: tuple[Tensor, Tensor, Tensor],
    *,
    guidance: float,
) -> Tensor:
    """NFSD's effective ``d_real = x0 - sigma (delta_D + s delta_C)``: ``D_s - (x_t - x0)`` below
    :data:`NFSD_SPLIT_T`, else ``x0 + D_s - D_neg`` (``D_s = D_u + s (D_c - D_u)``; ``conditions``: the prompt's,
    the empty prompt's and the negative prompt's embeddings, one row per sample). Without gradient."""
    n = len(x_t)
    with torch.no_grad():
        d = prior.denoise(x_t.detach().repeat(3, 1, 1, 1), sigma.repeat(3), torch.cat(conditions))
        d_c, d_u, d_neg = d[:n], d[n : 2 * n], d[2 * n :]
        d_s = classifier_free_guidance(d_u, d_c, guidance)
        x0 = x0.detach()
        late = (prior.timestep_at(sigma) >= NFSD_SPLIT_T).view(-1, 1, 1, 1)
        return torch.where(late, x0 + d_s - d_neg, d_s - (x_t.detach() - x0))


def shifted_sigma(prior: StableDiffusionPrior, sigma: Tensor, t_min: float) -> Tensor:
    """ASD's later level ``sigma_{t + dt}``, ``dt = floor(u SHIFT_RATIO (t - t_min T))``, ``u ~ U[0, 1)``, capped at
    the last timestep (``t_min``: a fraction of ``T``)."""
    last = prior.num_train_timesteps - 1
    t = prior.timestep_at(sigma)
    dt = torch.floor(torch.rand_like(t) * SHIFT_RATIO * (t - t_min * last).clamp(min=0))
    return prior.sigma_at((t + dt).clamp(max=last))


def shifted_fake(
    prior: StableDiffusionPrior, x0: Tensor, noise: Tensor, sigma: Tensor, later: Tensor, cond: Tensor
) -> Tensor:
    """The effective ``d_fake = x0 - (sigma / sigma') (x0 - D_c(x0 + sigma' n; sigma'))`` of ASD (and DSD): the
    prompt-conditioned, unguided prior at the later level ``sigma'`` on the same noise, so that
    ``(d_fake - D_s) / sigma = eps_s(x_t; t) - eps_c(x_t'; t')``. Without gradient."""
    with torch.no_grad():
        x0 = x0.detach()
        d_later = prior.denoise(x0 + later.view(-1, 1, 1, 1) * noise, later, cond)
        return x0 - (sigma / later).view(-1, 1, 1, 1) * (x0 - d_later)


def inverted_input(
    prior: StableDiffusionPrior, x0: Tensor, sigma: Tensor, cond: Tensor, uncond: Tensor
) -> tuple[Tensor, Tensor]:
    """SDI's ``(sigma', n)``: the level ``t' = t + delta``, ``delta ~ U{0..99}`` (of 1000, capped), and the noise
    ``n = (x_t' - x0) / sigma'`` of the render carried up to ``sigma'`` by :func:`ddim_invert` (guidance
    :data:`SDI_GUIDANCE`, :data:`SDI_STEPS` steps, ``eta`` :data:`SDI_ETA`)."""
    last = prior.num_train_timesteps - 1
    t = prior.timestep_at(sigma)
    delta = torch.randint(0, max(1, round(0.1 * last)), t.shape, device=t.device).to(t)
    later = prior.sigma_at((t + delta).clamp(max=last))

    def guided(x: Tensor, s: Tensor) -> Tensor:
        return prior.denoise(x, s, cond, uncond, SDI_GUIDANCE)

    x0 = x0.detach()
    sigma_min = float(prior.sigma_at(torch.zeros(1, device=x0.device)))
    x_later = ddim_invert(guided, x0, later, sigma_min=sigma_min, steps=SDI_STEPS, eta=SDI_ETA)
    return later, (x_later - x0) / later.view(-1, 1, 1, 1)


def path_noise(
    prior: StableDiffusionPrior, seeds: Tensor, later: Tensor, cond: Tensor, uncond: Tensor, *, guidance: float
) -> Tensor:
    """DSD's noise: each seed run down its guided DDIM path (:func:`ddim_path`, at most :data:`DSD_STEPS` steps) to
    ``later (B,)``, and the guided noise estimate there (``seeds``: one row per sample)."""

    def guided(x: Tensor, s: Tensor) -> Tensor:
        return prior.denoise(x, s, cond, uncond, guidance)

    sigma_max = float(prior.sigma_at(torch.full((1,), prior.num_train_timesteps - 1.0, device=seeds.device)))
    x = ddim_path(guided, seeds, later, sigma_max=sigma_max, steps=DSD_STEPS)
    with torch.no_grad():
        return epsilon(guided, x, later)


def noise_grid(seed: int, particle: int, channels: int, *, resolution: int = CFD_GRID) -> Tensor:
    """Particle ``particle``'s fixed 3D white noise ``(channels, R, R, R)`` over the scene box, drawn from
    ``(seed, particle)`` alone."""
    generator = particle_generator(seed, particle, 3)
    return torch.randn((channels, resolution, resolution, resolution), generator=generator)


def consistent_noise(
    grid: Tensor, background: Tensor, points: Tensor, hit: Tensor, *, bound: float, latent: int
) -> Tensor:
    """CFD's noise ``(B, C, h, h)`` of ``B`` views: per latent pixel, the sum of the ``grid`` cells that its rays'
    surface ``points (B, S, S, 3)`` fall in (rays with ``hit (B, S, S)``; each cell counted once), over the square
    root of their number; ``background (B, C, h, h)`` where no ray of the pixel hits (``bound``: the scene box's
    half side; ``latent``: ``h``)."""
    b, side = points.shape[:2]
    channels, res = grid.shape[0], grid.shape[1]
    cell = ((points / bound + 1) / 2 * res).long().clamp(0, res - 1)
    flat_cell = (cell[..., 0] * res + cell[..., 1]) * res + cell[..., 2]
    rows = torch.arange(side, device=points.device) * latent // side
    pixel = rows.view(-1, 1) * latent + rows.view(1, -1)
    pixel = torch.arange(b, device=points.device).view(-1, 1, 1) * latent * latent + pixel
    keys = torch.unique(pixel[hit] * res**3 + flat_cell[hit])
    pix, cells = keys // res**3, keys % res**3
    total = b * latent * latent
    sums = grid.new_zeros(channels, total).index_add_(1, pix, grid.reshape(channels, -1)[:, cells])
    counts = grid.new_zeros(total).index_add_(0, pix, torch.ones_like(pix, dtype=grid.dtype))
    noise = (sums / counts.clamp(min=1).sqrt()).view(channels, b, latent, latent).permute(1, 0, 2, 3)
    return torch.where((counts > 0).view(b, 1, latent, latent), noise, background)
