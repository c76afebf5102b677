"""Each divergence's columns (METHOD.md section 2) against autograd of its own f."""

from __future__ import annotations

import pytest
import torch

from uni3d.errors import UsageError
from uni3d.losses import get_divergence

SPECS = ["rkl", "fkl", "jeffreys", "jkl", "js", "chi2", "hellinger", "alpha(0.5)", "alpha(-0.7)", "alpha(2)",
         "0.4*fkl+0.6*rkl", "js+2*alpha(1.5)"]  # fmt: skip


def _derivative(fn, r: torch.Tensor) -> torch.Tensor:
    r = r.clone().requires_grad_()
    (g,) = torch.autograd.grad((fn(r) + 0 * r).sum(), r, create_graph=True)  # 0*r: constant h has a graph too
    return g


@pytest.mark.parametrize("spec", SPECS)
def test_columns_follow_from_f(spec: str) -> None:
    div = get_divergence(spec)
    r = torch.linspace(0.05, 6.0, 97, dtype=torch.float64)
    f2 = _derivative(lambda x: _derivative(div.f, x), r)
    torch.testing.assert_close(div.h(r), r**2 * f2, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(div.h_prime(r), _derivative(div.h, r), rtol=1e-10, atol=1e-10)
    h2 = _derivative(lambda x: _derivative(div.h, x), r)
    torch.testing.assert_close(div.r2_h2(r), r**2 * h2, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("spec", SPECS)
def test_f_vanishes_at_one(spec: str) -> None:
    """Every f-divergence is zero when q = p (f(1) = 0)."""
    one = torch.ones(1, dtype=torch.float64)
    assert abs(float(get_divergence(spec).f(one))) < 1e-12


def test_only_rkl_is_ratio_free() -> None:
    assert not get_divergence("rkl").uses_ratio
    assert all(get_divergence(s).uses_ratio for s in ["fkl", "js", "chi2", "hellinger", "0.5*fkl+0.5*rkl"])


@pytest.mark.parametrize(
    ("spec", "needle"),
    [("", "empty"), ("kl", "unknown divergence 'kl'"), ("alpha(1)", "limit case"), ("-1*rkl", "negative"),
     ("alpha(x)", "unknown divergence")],
)  # fmt: skip
def test_bad_names_give_one_line(spec: str, needle: str) -> None:
    with pytest.raises(UsageError) as err:
        get_divergence(spec)
    assert needle in str(err.value) and "\n" not in str(err.value)
