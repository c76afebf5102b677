"""The conversion table: VP and VE describe the same noising, and every prediction type maps to one denoiser."""

from __future__ import annotations

import pytest
import torch

from uni3d.diffusion.units import (
    classifier_free_guidance,
    denoiser_from_prediction,
    prediction_from_denoiser,
    score_from_denoiser,
    ve_sigma,
    vp_coefficients,
)
from uni3d.errors import UsageError


def _noised(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    f64 = {"generator": gen, "dtype": torch.float64}
    x0, eps = torch.randn(5, 3, 4, 4, **f64), torch.randn(5, 3, 4, 4, **f64)
    alpha_bar = torch.rand(5, **f64) * 0.98 + 0.01
    return x0, eps, alpha_bar


def test_vp_and_ve_are_the_same_process() -> None:
    x0, eps, alpha_bar = _noised()
    sigma = ve_sigma(alpha_bar)
    alpha, sigma_vp = vp_coefficients(sigma)
    torch.testing.assert_close(alpha**2, alpha_bar)
    torch.testing.assert_close(alpha**2 + sigma_vp**2, torch.ones_like(alpha))
    x_vp = alpha.view(-1, 1, 1, 1) * x0 + sigma_vp.view(-1, 1, 1, 1) * eps
    torch.testing.assert_close(x_vp / alpha.view(-1, 1, 1, 1), x0 + sigma.view(-1, 1, 1, 1) * eps)


@pytest.mark.parametrize("kind", ["eps", "x0", "v"])
def test_exact_predictions_give_the_clean_sample(kind: str) -> None:
    x0, eps, alpha_bar = _noised(1)
    sigma = ve_sigma(alpha_bar)
    a, s = (c.view(-1, 1, 1, 1) for c in vp_coefficients(sigma))
    x_vp = a * x0 + s * eps
    exact = {"eps": eps, "x0": x0, "v": a * eps - s * x0}[kind]
    torch.testing.assert_close(denoiser_from_prediction(exact, x_vp, sigma, kind), x0)
    torch.testing.assert_close(prediction_from_denoiser(x0, x_vp, sigma, kind), exact)


def test_score_of_eps_network_matches_vp_marginal_score() -> None:
    """s_ve(x_ve) = -eps_hat / sigma = alpha * s_vp(x_vp) (chain rule of x_ve = x_vp / alpha)."""
    x0, eps, alpha_bar = _noised(2)
    sigma = ve_sigma(alpha_bar)
    a, s = (c.view(-1, 1, 1, 1) for c in vp_coefficients(sigma))
    x_vp = a * x0 + s * eps
    eps_hat = 0.9 * eps + 0.1
    d = denoiser_from_prediction(eps_hat, x_vp, sigma, "eps")
    s_ve = score_from_denoiser(d, x_vp / a, sigma)
    torch.testing.assert_close(s_ve, a * (-eps_hat / s))


def test_cfg_is_linear_in_any_unit() -> None:
    x0, eps, alpha_bar = _noised(3)
    sigma = ve_sigma(alpha_bar)
    a, s = (c.view(-1, 1, 1, 1) for c in vp_coefficients(sigma))
    x_vp = a * x0 + s * eps
    e_u, e_c = eps, 0.5 * eps + 0.3
    guided_eps = classifier_free_guidance(e_u, e_c, 7.5)
    torch.testing.assert_close(guided_eps, e_u + 7.5 * (e_c - e_u))
    d_u, d_c = (denoiser_from_prediction(e, x_vp, sigma, "eps") for e in (e_u, e_c))
    torch.testing.assert_close(
        classifier_free_guidance(d_u, d_c, 7.5), denoiser_from_prediction(guided_eps, x_vp, sigma, "eps")
    )


def test_unknown_prediction_type() -> None:
    with pytest.raises(UsageError, match="sample"):
        denoiser_from_prediction(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), "sample")  # type: ignore[arg-type]
