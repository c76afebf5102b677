"""EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models") in VE units.

The noise schedule (eq. 5), the deterministic Heun sampler (Algorithm 1), the log-normal training
distribution of ``sigma`` and the preconditioning coefficients (Table 1). A denoiser is any callable
``D(x, sigma) -> x0 estimate`` with ``sigma`` of shape ``[B]``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from uni3d.errors import UsageError

Denoiser = Callable[[Tensor, Tensor], Tensor]

SIGMA_MIN = 0.002
SIGMA_MAX = 80.0
RHO = 7.0
P_MEAN = -1.2
P_STD = 1.2


def karras_sigmas(n_steps: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO) -> Tensor:
    """``n_steps + 1`` noise levels of EDM eq. 5, from ``sigma_max`` down to ``sigma_min``, then a final 0.

    ``sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``; with one
    step the schedule is ``[sigma_max, 0]``.
    """
    if n_steps < 1:
        raise UsageError(f"the sampler needs at least one step, got {n_steps}")
    if n_steps == 1:
        return torch.tensor([sigma_max, 0.0], dtype=torch.float64)
    i = torch.arange(n_steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + i / (n_steps - 1) * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def heun_steps(nfe: int) -> int:
    """Heun steps ``N`` for a budget of ``nfe`` denoiser calls: ``nfe = 2N - 1`` (the last step is Euler)."""
    if nfe < 1 or nfe % 2 == 0:
        raise UsageError(f"NFE must be odd and positive (2N - 1 for N Heun steps), got {nfe}")
    return (nfe + 1) // 2


@torch.no_grad()
def heun_sample(denoiser: Denoiser, noise: Tensor, nfe: int, sigma_max: float = SIGMA_MAX) -> Tensor:
    """Deterministic EDM sampler (Algorithm 1, no churn) from ``x = sigma_max * noise`` with ``nfe`` calls.

    NFE 1 is a single Euler step to ``sigma = 0`` (``x0 = D(x; sigma_max)``); NFE ``2N - 1`` is ``N`` steps,
    each Heun's second-order correction (eq. 3 ODE ``dx/dsigma = (x - D) / sigma``) except the last.
    """
    sigmas = karras_sigmas(heun_steps(nfe), sigma_max=sigma_max).to(noise.dtype)
    x = noise * sigmas[0]
    ones = torch.ones(noise.shape[0], dtype=noise.dtype, device=noise.device)
    for s_cur, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        d_cur = (x - denoiser(x, ones * s_cur)) / s_cur
        x_next = x + (s_next - s_cur) * d_cur
        if s_next > 0:
            d_next = (x_next - denoiser(x_next, ones * s_next)) / s_next
            x_next = x + (s_next - s_cur) * 0.5 * (d_cur + d_next)
        x = x_next
    return x


def lognormal_sigma(
    n: int,
    p_mean: float = P_MEAN,
    p_std: float = P_STD,
    generator: torch.Generator | None = None,
    sigma_min: float = 0.0,
) -> Tensor:
    """EDM's training distribution (Table 1): ``ln sigma ~ N(p_mean, p_std^2)``, shape ``[n]``.

    With ``sigma_min > 0`` the normal is truncated to ``ln sigma >= ln sigma_min`` (no point mass at the bound).
    """
    if sigma_min <= 0:
        return (p_mean + p_std * torch.randn(n, generator=generator)).exp()
    lo = (math.log(sigma_min) - p_mean) / p_std
    z = torch.nn.init.trunc_normal_(torch.empty(n), a=lo, b=math.inf, generator=generator)
    return (p_mean + p_std * z).exp()


def rho_time_sigma(n: int, t_max: float, generator: torch.Generator | None = None, sigma_min: float = 0.0) -> Tensor:
    """SiD's generator noise levels, shape ``[n]``: ``t ~ U[t_lo, t_max]`` on the rho-7 schedule of
    :func:`karras_sigmas` read as a function of ``t`` in ``[0, 1]``,
    ``sigma(t) = (SIGMA_MAX^(1/rho) + (1 - t)(SIGMA_MIN^(1/rho) - SIGMA_MAX^(1/rho)))^rho`` (``t = 0``: SIGMA_MIN,
    ``t = 1``: SIGMA_MAX); ``t_lo`` is where ``sigma(t) = sigma_min`` (0 when ``sigma_min <= SIGMA_MIN``)."""
    lo, hi = SIGMA_MIN ** (1 / RHO), SIGMA_MAX ** (1 / RHO)
    t_lo = 1 - (max(sigma_min, SIGMA_MIN) ** (1 / RHO) - hi) / (lo - hi)
    if not 0 <= t_lo < t_max <= 1:
        raise UsageError(
            f"the generator's time range [{t_lo:.3f}, {t_max:g}] is empty; need sigma_min below sigma(t_max)"
        )
    t = t_lo + (t_max - t_lo) * torch.rand(n, generator=generator)
    return (hi + (1 - t) * (lo - hi)) ** RHO


@dataclass(frozen=True)
class Preconditioning:
    """EDM Table 1 coefficients for ``D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)``, each ``[B]``."""

    c_skip: Tensor
    c_out: Tensor
    c_in: Tensor
    c_noise: Tensor


def preconditioning(sigma: Tensor, sigma_data: float) -> Preconditioning:
    """``c_skip = sd^2 / (s^2 + sd^2)``, ``c_out = s sd / sqrt(s^2 + sd^2)``, ``c_in = 1 / sqrt(s^2 + sd^2)``,
    ``c_noise = ln(s) / 4`` (EDM Table 1, "Ours")."""
    total = sigma.pow(2) + sigma_data**2
    return Preconditioning(
        c_skip=sigma_data**2 / total,
        c_out=sigma * sigma_data * total.rsqrt(),
        c_in=total.rsqrt(),
        c_noise=sigma.log() / 4,
    )


def loss_weight(sigma: Tensor, sigma_data: float) -> Tensor:
    """EDM's ``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2`` (Table 1): unit loss at init."""
    return (sigma.pow(2) + sigma_data**2) / (sigma * sigma_data).pow(2)


def vp_preconditioning(sigma: Tensor, beta_d: float = 19.9, beta_min: float = 0.1, m: int = 1000) -> Preconditioning:
    """EDM Table 1 "VP" (Song et al. 2021's DDPM++ VP SDE in VE units): ``c_skip = 1``, ``c_out = -s``,
    ``c_in = 1 / sqrt(s^2 + 1)``, ``c_noise = (M - 1) t(s)`` with the inverse schedule
    ``t(s) = (sqrt(beta_min^2 + 2 beta_d ln(1 + s^2)) - beta_min) / beta_d``."""
    t = ((beta_min**2 + 2 * beta_d * sigma.pow(2).log1p()).sqrt() - beta_min) / beta_d
    return Preconditioning(
        c_skip=torch.ones_like(sigma), c_out=-sigma, c_in=(sigma.pow(2) + 1).rsqrt(), c_noise=(m - 1) * t
    )


def ve_preconditioning(sigma: Tensor) -> Preconditioning:
    """EDM Table 1 "VE" (NCSN++): ``c_skip = 1``, ``c_out = s``, ``c_in = 1``, ``c_noise = ln(s / 2)``."""
    return Preconditioning(
        c_skip=torch.ones_like(sigma), c_out=sigma, c_in=torch.ones_like(sigma), c_noise=(0.5 * sigma).log()
    )


@functools.lru_cache(maxsize=4)
def iddpm_sigmas(c_1: float = 0.001, c_2: float = 0.008, m: int = 1000) -> Tensor:
    """Improved DDPM's ``M + 1`` discrete noise levels ``u_0 > ... > u_M = 0`` in VE units (EDM's iDDPMPrecond,
    Table 1): ``u_{j-1} = sqrt((u_j^2 + 1) / max(abar(j-1) / abar(j), C_1) - 1)``,
    ``abar(j) = sin(pi j / (2 M (C_2 + 1)))^2``; in float32 like EDM's buffer ``u``, so that rounding a
    noise level to its nearest ``u_j`` picks the same ``j``."""
    j = torch.arange(m + 1, dtype=torch.float32)
    alpha_bar = (0.5 * math.pi * j / m / (c_2 + 1)).sin() ** 2
    u = torch.zeros(m + 1)
    for k in range(m, 0, -1):
        u[k - 1] = ((u[k] ** 2 + 1) / (alpha_bar[k - 1] / alpha_bar[k]).clamp(min=c_1) - 1).sqrt()
    return u


def iddpm_preconditioning(sigma: Tensor, c_1: float = 0.001, c_2: float = 0.008, m: int = 1000) -> Preconditioning:
    """EDM Table 1 "iDDPM": ``c_skip = 1``, ``c_out = -s``, ``c_in = 1 / sqrt(s^2 + 1)``,
    ``c_noise = M - 1 - j`` for the index ``j`` of the level ``u_j`` nearest to ``s`` (:func:`iddpm_sigmas`)."""
    u = iddpm_sigmas(c_1, c_2, m).to(sigma.device)
    # nearest level as EDM's round_sigma finds it (cdist in float32), so ties break the same way
    index = torch.cdist(sigma.detach().float().reshape(1, -1, 1), u.reshape(1, -1, 1)).argmin(2).reshape(-1)
    return Preconditioning(
        c_skip=torch.ones_like(sigma),
        c_out=-sigma,
        c_in=(sigma.pow(2) + 1).rsqrt(),
        c_noise=(m - 1 - index).to(sigma.dtype),
    )
