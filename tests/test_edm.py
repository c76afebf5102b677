"""EDM schedule, Heun sampler and preconditioning (Karras et al. 2022)."""

from __future__ import annotations

import math

import pytest
import torch

from uni3d.diffusion.edm import (
    RHO,
    SIGMA_MAX,
    SIGMA_MIN,
    heun_sample,
    heun_steps,
    karras_sigmas,
    lognormal_sigma,
    preconditioning,
    rho_time_sigma,
)
from uni3d.errors import UsageError
from uni3d.tasks.toy.metrics import energy_distance
from uni3d.tasks.toy.teacher import RingTeacher


def test_karras_schedule_endpoints_and_monotone() -> None:
    sigmas = karras_sigmas(6)
    assert sigmas.shape == (7,)
    assert sigmas[0] == pytest.approx(SIGMA_MAX)
    assert sigmas[-2] == pytest.approx(SIGMA_MIN)
    assert sigmas[-1] == 0
    assert torch.all(sigmas[1:] < sigmas[:-1])
    assert karras_sigmas(1).tolist() == [SIGMA_MAX, 0.0]


@pytest.mark.parametrize(("nfe", "steps"), [(1, 1), (3, 2), (5, 3), (11, 6), (35, 18)])
def test_nfe_counts_denoiser_calls(nfe: int, steps: int) -> None:
    calls = []

    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        calls.append(float(sigma[0]))
        return torch.zeros_like(x)

    assert heun_steps(nfe) == steps
    heun_sample(denoiser, torch.randn(4, 2), nfe)
    assert len(calls) == nfe
    assert calls[0] == pytest.approx(SIGMA_MAX)


@pytest.mark.parametrize("nfe", [0, 2, -1])
def test_even_or_nonpositive_nfe_is_a_usage_error(nfe: int) -> None:
    with pytest.raises(UsageError):
        heun_steps(nfe)


def test_heun_is_exact_for_a_gaussian() -> None:
    """For q0 = N(0, v) the ODE solution is x0 = x_T sqrt(v / (v + sigma_max^2)); Heun converges to it, at second order."""
    v = 0.3

    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x * v / (v + sigma.reshape(-1, 1).pow(2))

    noise = torch.randn(8, 2, dtype=torch.float64)
    exact = noise * SIGMA_MAX * math.sqrt(v / (v + SIGMA_MAX**2))
    nfes = (5, 11, 35, 101, 301)
    errors = [(heun_sample(denoiser, noise, nfe) - exact).abs().max().item() for nfe in nfes]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-3
    # Second order: tripling the steps divides the error by about 3^2 (Euler would give 3).
    order = math.log(errors[-2] / errors[-1]) / math.log((nfes[-1] + 1) / (nfes[-2] + 1))
    assert order > 1.8


def test_heun_converges_to_the_ring() -> None:
    """Energy distance to exact ring samples falls as NFE grows (exact score)."""
    teacher = RingTeacher()
    gen = torch.Generator().manual_seed(0)
    target = teacher.sample(1500, gen)
    noise = torch.randn(1500, 2, generator=gen, dtype=torch.float64)
    eds = [energy_distance(heun_sample(teacher.denoiser, noise, nfe).float(), target) for nfe in (5, 11, 35)]
    assert eds[0] > eds[1] > eds[2]
    assert eds[2] < 0.01


def test_preconditioning_matches_edm_table_1() -> None:
    sigma, sd = torch.tensor([0.5, 2.0]), 0.5
    pre = preconditioning(sigma, sd)
    torch.testing.assert_close(pre.c_skip, sd**2 / (sigma**2 + sd**2))
    torch.testing.assert_close(pre.c_out, sigma * sd / (sigma**2 + sd**2).sqrt())
    torch.testing.assert_close(pre.c_in, 1 / (sigma**2 + sd**2).sqrt())
    torch.testing.assert_close(pre.c_noise, sigma.log() / 4)
    # The derivation's constraints (EDM appendix B.6): unit-variance input and unit-variance training target.
    torch.testing.assert_close(pre.c_in**2 * (sd**2 + sigma**2), torch.ones(2))
    torch.testing.assert_close((1 - pre.c_skip) ** 2 * sd**2 + pre.c_skip**2 * sigma**2, pre.c_out**2)


def test_lognormal_sigma_moments() -> None:
    s = lognormal_sigma(20000, -1.2, 1.2, torch.Generator().manual_seed(0))
    assert s.log().mean().item() == pytest.approx(-1.2, abs=0.03)
    assert s.log().std().item() == pytest.approx(1.2, abs=0.03)


def test_rho_time_sigma_is_sids_generator_range() -> None:
    # t ~ U[0, 0.8] on the rho-7 schedule: sigma from SIGMA_MIN up to sigma(0.8) (about 24.4), uniform in t, so
    # the median is sigma(0.4); a cut at sigma_min moves the lower end and keeps t uniform above it
    s = rho_time_sigma(20000, 0.8, torch.Generator().manual_seed(0))
    lo, hi = SIGMA_MIN ** (1 / RHO), SIGMA_MAX ** (1 / RHO)

    def sigma(t: float) -> float:
        return (hi + (1 - t) * (lo - hi)) ** RHO

    assert SIGMA_MIN <= s.min().item() and s.max().item() <= sigma(0.8) == pytest.approx(24.4, abs=0.1)
    assert s.median().item() == pytest.approx(sigma(0.4), rel=0.03)
    cut = rho_time_sigma(20000, 0.8, torch.Generator().manual_seed(0), sigma_min=0.3)
    assert cut.min().item() >= 0.3 - 1e-6 and cut.max().item() <= sigma(0.8)
    with pytest.raises(UsageError, match="time range"):
        rho_time_sigma(4, 0.1, sigma_min=50.0)
