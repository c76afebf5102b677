"""METHOD.md section 6: the loss module's gradients against exact ones, on 1-D Gaussians.

Teacher ``q0 = N(m, v)``, generator ``x0 = mu + s z``; VE noise at a fixed ``sigma`` gives
``p_sigma = N(mu, s^2 + sigma^2)`` and ``q_sigma = N(m, v + sigma^2)``, so scores, denoisers and the ratio
are closed form. The closed-form denoisers are fed through :func:`~uni3d.losses.expanded_loss` and
:func:`~uni3d.losses.integral_loss` as the "networks" (parameters detached, inputs live), expectations
over ``(z, n)`` are taken with an 80 x 80 Gauss-Hermite grid, and autograd of the surrogate is compared
with autograd of the exact objective:

- expanded form: ``J = E_{p_sigma}[h(r) (s_p - s_q)^2]`` (section 4),
- integral form: ``J = D_f(q_sigma || p_sigma) = E_{p_sigma}[f(r)]`` (section 3).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from uni3d.losses import DenoiserOutputs, Divergence, RatioEstimate, expanded_loss, get_divergence, integral_loss

Form = Literal["expanded", "integral"]
FORMS: tuple[Form, ...] = ("expanded", "integral")
NODES = 80


@dataclass(frozen=True)
class GaussianCase:
    """Teacher ``N(m, v)``, noise level ``sigma``, generator ``mu + s z``."""

    m: float
    v: float
    sigma: float
    mu: float
    s: float


TABLED = GaussianCase(m=0.7, v=0.25, sigma=0.8, mu=0.1, s=0.9)
"""The parameters of METHOD.md section 6, whose gradients are tabled in :data:`REFERENCE`."""

CASES: tuple[GaussianCase, ...] = (
    TABLED,
    GaussianCase(m=-0.4, v=0.5, sigma=0.5, mu=0.3, s=1.1),
    GaussianCase(m=1.5, v=1.0, sigma=1.5, mu=1.0, s=1.2),
    GaussianCase(m=0.0, v=0.3, sigma=0.3, mu=0.2, s=0.7),
    GaussianCase(m=-1.0, v=2.0, sigma=2.5, mu=-0.2, s=1.6),
)

DIVERGENCES: tuple[str, ...] = (
    "rkl", "fkl", "jeffreys", "js", "chi2", "hellinger",
    "alpha(0.5)", "alpha(-0.5)", "alpha(1.5)", "0.4*fkl+0.6*rkl",
)  # fmt: skip

REFERENCE: dict[tuple[str, Form], tuple[float, float]] = {
    ("rkl", "expanded"): (-1.51496023, 1.41631669),
    ("rkl", "integral"): (-0.67415730, 0.39054630),
    ("fkl", "expanded"): (-0.57074911, 0.23617204),
    ("fkl", "integral"): (-0.41379310, 0.08561237),
    ("jeffreys", "expanded"): (-2.08570934, 1.65248873),
    ("jeffreys", "integral"): (-1.08795041, 0.47615867),
    ("js", "expanded"): (-0.32214014, 0.16405951),
    ("js", "integral"): (-0.22514898, 0.06687869),
    ("chi2", "expanded"): (-1.09549828, 0.25070842),
    ("chi2", "integral"): (-0.77418410, 0.03251334),
}
"""Gradients w.r.t. ``(mu, s)`` at :data:`TABLED`, as printed (8 decimals) in METHOD.md section 6."""


@dataclass(frozen=True)
class CheckRow:
    """One comparison: the surrogate's gradient against the exact one (and the tabled one, if any)."""

    divergence: str
    form: Form
    case: GaussianCase
    exact: tuple[float, float]
    surrogate: tuple[float, float]
    rel_error: float
    reference: tuple[float, float] | None
    passed: bool

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _hermite() -> tuple[Tensor, Tensor]:
    """Probabilists' Gauss-Hermite nodes and weights normalised to sum to 1 (``E`` under ``N(0, 1)``)."""
    x, w = np.polynomial.hermite_e.hermegauss(NODES)
    return torch.tensor(x, dtype=torch.float64), torch.tensor(w / w.sum(), dtype=torch.float64)


def _log_normal(x: Tensor, mean: Tensor | float, var: Tensor | float) -> Tensor:
    var = torch.as_tensor(var, dtype=torch.float64)
    return -0.5 * (x - mean) ** 2 / var - 0.5 * torch.log(2 * math.pi * var)


def _exact_objective(div: Divergence, form: Form, case: GaussianCase, theta: Tensor) -> Tensor:
    """``J(mu, s)`` with every dependence on ``theta`` live, by quadrature over ``x ~ p_sigma``."""
    nodes, weights = _hermite()
    mu, s = theta
    var_p, var_q = s**2 + case.sigma**2, case.v + case.sigma**2
    x = mu + var_p.sqrt() * nodes
    r = (_log_normal(x, case.m, var_q) - _log_normal(x, mu, var_p)).exp()
    if form == "integral":
        return (weights * div.f(r)).sum()
    y = -(x - mu) / var_p + (x - case.m) / var_q
    return (weights * div.h(r) * y**2).sum()


def _surrogate_objective(div: Divergence, form: Form, case: GaussianCase, theta: Tensor) -> Tensor:
    """The loss module's surrogate averaged over the ``(z, n)`` grid; closed-form denoisers as the networks."""
    nodes, weights = _hermite()
    z, n = (g.reshape(-1, 1) for g in torch.meshgrid(nodes, nodes, indexing="ij"))
    w = (weights[:, None] * weights[None, :]).reshape(-1)
    mu, s = theta
    x0 = mu + s * z
    x_t = x0 + case.sigma * n
    sigma = torch.full((x0.shape[0],), case.sigma, dtype=torch.float64)
    mu_d, var_p = mu.detach(), s.detach() ** 2 + case.sigma**2
    var_q = case.v + case.sigma**2
    # Denoisers D = x_t + sigma^2 * score, frozen parameters, live input x_t (Tweedie).
    d_fake = x_t - case.sigma**2 * (x_t - mu_d) / var_p
    d_real = x_t - case.sigma**2 * (x_t - case.m) / var_q
    log_r = (_log_normal(x_t, case.m, var_q) - _log_normal(x_t, mu_d, var_p)).flatten().detach()
    ratio = RatioEstimate.exact(log_r)
    outputs = DenoiserOutputs(x0=x0, x_t=x_t, sigma=sigma, d_real=d_real, d_fake=d_fake, ratio=ratio)
    form_loss = integral_loss if form == "integral" else expanded_loss
    loss = form_loss(outputs, divergence=div)
    return (w * loss).sum()


def _gradient(objective: Tensor, theta: Tensor) -> tuple[float, float]:
    (grad,) = torch.autograd.grad(objective, theta)
    return float(grad[0]), float(grad[1])


def check_one(divergence: str, form: Form, case: GaussianCase, rtol: float = 1e-8) -> CheckRow:
    """Compare surrogate and exact gradients w.r.t. ``(mu, s)`` in float64 for one divergence, form and case."""
    div = get_divergence(divergence)
    start = torch.tensor([case.mu, case.s], dtype=torch.float64)
    theta_exact, theta_surr = start.clone().requires_grad_(), start.clone().requires_grad_()
    exact = _gradient(_exact_objective(div, form, case, theta_exact), theta_exact)
    surrogate = _gradient(_surrogate_objective(div, form, case, theta_surr), theta_surr)
    scale = max(abs(exact[0]), abs(exact[1]))
    rel = max(abs(a - b) for a, b in zip(exact, surrogate, strict=True)) / scale
    reference = REFERENCE.get((div.name, form)) if case == TABLED else None
    # The table is printed to 8 decimals: it matches when within half a unit of the last place.
    ref_ok = reference is None or all(abs(a - b) <= 5.01e-9 for a, b in zip(exact, reference, strict=True))
    return CheckRow(div.name, form, case, exact, surrogate, rel, reference, rel <= rtol and ref_ok)


def run_check(
    divergences: tuple[str, ...] = DIVERGENCES,
    cases: tuple[GaussianCase, ...] = CASES,
    rtol: float = 1e-8,
) -> list[CheckRow]:
    """Every divergence x form x case of section 6."""
    return [check_one(d, f, c, rtol) for c in cases for d in divergences for f in FORMS]


def format_table(rows: list[CheckRow]) -> str:
    """A plain-text table, one row per comparison."""
    head = f"{'case (m,v,sigma,mu,s)':<28} {'divergence':<16} {'form':<9} {'exact grad':<26} {'rel err':>9}  ok"
    lines = [head, "-" * len(head)]
    for row in rows:
        c = row.case
        case = f"({c.m:g},{c.v:g},{c.sigma:g},{c.mu:g},{c.s:g})"
        grad = f"({row.exact[0]:+.8f}, {row.exact[1]:+.8f})"
        tag = "ok" if row.passed else "FAIL"
        ref = "  =table" if row.reference is not None and row.passed else ""
        lines.append(f"{case:<28} {row.divergence:<16} {row.form:<9} {grad:<26} {row.rel_error:9.1e}  {tag}{ref}")
    failed = sum(not r.passed for r in rows)
    lines.append(f"{len(rows) - failed} passed, {failed} failed")
    return "\n".join(lines)
