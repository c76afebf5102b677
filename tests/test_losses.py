"""The loss forms and presets against the formulas they claim (METHOD.md sections 3-5)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from uni3d.errors import UsageError
from uni3d.losses import (
    PRESET_NAMES,
    DenoiserOutputs,
    RatioEstimate,
    discriminator_loss,
    expanded_loss,
    fake_score_loss,
    generator_loss,
    get_divergence,
    get_preset,
    integral_loss,
    ratio_from_logits,
    regression_loss,
    sid_loss,
)


def _batch(seed: int = 0, shape: tuple[int, ...] = (4, 3, 8, 8)):
    """Float64 (theta, sigma, noise, log_r): identities are checked at double precision."""
    gen = torch.Generator().manual_seed(seed)
    f64 = {"generator": gen, "dtype": torch.float64}
    theta = torch.randn(shape, **f64).requires_grad_()
    sigma = torch.exp(torch.randn(shape[0], **f64))
    noise = torch.randn(shape, **f64)
    log_r = 0.5 * torch.randn(shape[0], **f64)
    return theta, sigma, noise, log_r


def _out(x0, x_t, sigma, d_q, d_p=None, log_r=None, moves=None) -> DenoiserOutputs:
    """The loss module's input object; ``log_r`` a known ratio (every sample moving unless ``moves`` says)."""
    ratio = None if log_r is None else RatioEstimate.exact(log_r)
    if ratio is not None and moves is not None:
        ratio = dataclasses.replace(ratio, moves=moves)
    return DenoiserOutputs(x0=x0, x_t=x_t, sigma=sigma, d_real=d_q, d_fake=d_p, ratio=ratio)


def _grad(loss: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    (g,) = torch.autograd.grad(loss.sum(), theta, retain_graph=True)
    return g


def _eval(denoisers, theta, sigma, noise):
    """x0 = tanh(theta) (a stand-in generator), x_t live, both denoisers on the live x_t."""
    teacher, fake = denoisers
    x0 = torch.tanh(theta)
    x_t = x0 + sigma.reshape(-1, 1, 1, 1) * noise
    return x0, x_t, teacher(x_t, sigma), fake(x_t, sigma)


def test_two_sid_half_equals_uni_rkl(denoisers) -> None:
    """2 x SiD(alpha = 0.5) = uni-rkl, in value and gradient (METHOD.md section 4)."""
    theta, sigma, noise, _ = _batch()
    x0, x_t, d_q, d_p = _eval(denoisers, theta, sigma, noise)
    uni = expanded_loss(_out(x0, x_t, sigma, d_q, d_p), divergence=get_divergence("rkl"))
    sid = sid_loss(_out(x0, x_t, sigma, d_q, d_p), alpha=0.5)
    torch.testing.assert_close(uni, 2 * sid)
    theta2 = theta.detach().clone().requires_grad_()
    x0b, x_tb, d_qb, d_pb = _eval(denoisers, theta2, sigma, noise)
    torch.testing.assert_close(
        _grad(uni, theta), _grad(2 * sid_loss(_out(x0b, x_tb, sigma, d_qb, d_pb), alpha=0.5), theta2)
    )
    # The same identity through the presets (both use the SiD weighting).
    p_uni, p_sid = get_preset("uni-rkl"), get_preset("sid").with_options(alpha=0.5)
    a = generator_loss(p_uni, _out(x0, x_t, sigma, d_q, d_p))
    b = generator_loss(p_sid, _out(x0, x_t, sigma, d_q, d_p))
    torch.testing.assert_close(a, 2 * b)


def test_integral_rkl_with_conditional_score_is_sds(denoisers) -> None:
    """sds = integral rkl with c in place of s_p: gradient (1 - alpha_bar) (eps_hat - eps) (DreamFusion)."""
    theta, sigma, noise, _ = _batch(1)
    x0, x_t, d_q, _ = _eval(denoisers, theta, sigma, noise)
    loss = generator_loss(get_preset("sds"), _out(x0, x_t, sigma, d_q.detach()))
    s = sigma.reshape(-1, 1, 1, 1)
    eps_hat = (x_t - d_q) / s
    expected = (s**2 / (1 + s**2) * (eps_hat - noise)).detach()
    expected = expected * (1 - torch.tanh(theta) ** 2)  # chain rule through x0 = tanh(theta)
    torch.testing.assert_close(_grad(loss, theta), expected, rtol=1e-5, atol=1e-6)
    # and integral_loss with d_fake = x0 gives the same gradient (same formula, no preset)
    direct = integral_loss(
        _out(x0, x_t, sigma, d_q, x0.detach()), divergence=get_divergence("rkl"), weight=sigma**3 / (1 + sigma**2)
    )
    torch.testing.assert_close(_grad(direct, theta), expected, rtol=1e-5, atol=1e-6)


def test_vsd_dmd_di_fdistill_gradients(denoisers) -> None:
    """Integral presets: gradient w.r.t. x0 = w_data * h(r) * (D_p - D_q) with their stated weightings."""
    x0 = torch.randn(4, 3, 8, 8, dtype=torch.float64).requires_grad_()
    sigma, noise, log_r = _batch(2)[1:]
    x_t = x0 + sigma.reshape(-1, 1, 1, 1) * noise
    d_q, d_p = (net(x_t, sigma).detach() for net in denoisers)
    s = sigma.reshape(-1, 1, 1, 1)
    diff = d_p - d_q
    gap = (x0 - d_q).abs().mean(dim=(1, 2, 3), keepdim=True).detach()
    r = log_r.exp().reshape(-1, 1, 1, 1)
    expected = {
        "vsd": s / (1 + s**2) * diff,  # = (1 - alpha_bar) (eps_pretrain - eps_lora)
        "di": diff,
        "dmd": diff / gap,  # DMD: (D_fake - D_real) / mean|x0 - D_real|
        "fdistill-fkl": r * diff / gap,
        "fdistill-js": r / (1 + r) * diff / gap,
    }
    for name, want in expected.items():
        loss = generator_loss(get_preset(name), _out(x0, x_t, sigma, d_q, d_p, log_r))
        torch.testing.assert_close(_grad(loss, x0), want, rtol=1e-5, atol=1e-6, msg=name)


def test_sid_and_sim_values(denoisers) -> None:
    """sid/sim presets equal SiD's loss a^T((D_q - x0) - alpha a) / mean|x0 - D_q| in data units."""
    theta, sigma, noise, _ = _batch(3)
    x0, x_t, d_q, d_p = _eval(denoisers, theta, sigma, noise)
    a = d_q - d_p
    gap = (x0 - d_q).abs().mean(dim=(1, 2, 3))
    for name, alpha in [("sid", 1.2), ("sim", 1.0)]:
        want = (a * ((d_q - x0) - alpha * a)).sum(dim=(1, 2, 3)) / gap
        got = generator_loss(get_preset(name), _out(x0, x_t, sigma, d_q, d_p))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_uni_preset_is_expanded_form_with_sid_weight(denoisers) -> None:
    theta, sigma, noise, log_r = _batch(4)
    x0, x_t, d_q, d_p = _eval(denoisers, theta, sigma, noise)
    gap = (x0 - d_q).abs().mean(dim=(1, 2, 3)).detach()
    got = generator_loss(get_preset("uni-jeffreys"), _out(x0, x_t, sigma, d_q, d_p, log_r))
    want = expanded_loss(
        _out(x0, x_t, sigma, d_q, d_p, log_r), divergence=get_divergence("jeffreys"), weight=sigma**4 / gap
    )
    torch.testing.assert_close(got, want)


def test_ratio_ignored_when_divergence_is_ratio_free(denoisers) -> None:
    theta, sigma, noise, log_r = _batch(5)
    x0, x_t, d_q, d_p = _eval(denoisers, theta, sigma, noise)
    p = get_preset("uni-rkl")
    assert not p.uses_ratio
    a = generator_loss(p, _out(x0, x_t, sigma, d_q, d_p, log_r))
    b = generator_loss(p, _out(x0, x_t, sigma, d_q, d_p))
    torch.testing.assert_close(a, b)
    assert get_preset("uni-fkl").uses_ratio and get_preset("uni-fkl").needs_input_grad
    assert not get_preset("vsd").needs_input_grad


@pytest.mark.parametrize("shape", [(5, 2), (3, 3, 8, 8), (2, 4, 4, 4), (2, 1, 4, 4, 4)])
@pytest.mark.parametrize("name", ["sds", "vsd", "dmd", "sid", "fdistill-chi2", "uni-js", "uni-alpha(0.5)"])
def test_any_shape_runs_and_backprops(name: str, shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(6)
    x0 = torch.randn(shape, generator=gen).requires_grad_()
    sigma = torch.rand(shape[0], generator=gen) + 0.1
    x_t = x0 + sigma.reshape(-1, *[1] * (len(shape) - 1)) * torch.randn(shape, generator=gen)
    d_q, d_p = 0.5 * x_t, 0.4 * x_t
    loss = generator_loss(get_preset(name), _out(x0, x_t, sigma, d_q, d_p, torch.zeros(shape[0])))
    assert loss.shape == (shape[0],)
    g = _grad(loss, x0)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("name", ["vsd", "uni-fkl", "sid"])
def test_bfloat16_matches_float32(denoisers, name: str) -> None:
    theta, sigma, noise, log_r = _batch(7)
    grads = []
    for dtype in (torch.float32, torch.bfloat16):
        th = theta.detach().to(dtype).requires_grad_()
        teacher, fake = (n.to(dtype) for n in denoisers)
        x0 = torch.tanh(th)
        x_t = x0 + sigma.to(dtype).reshape(-1, 1, 1, 1) * noise.to(dtype)
        s = sigma.to(dtype)
        loss = generator_loss(get_preset(name), _out(x0, x_t, s, teacher(x_t, s), fake(x_t, s), log_r))
        assert loss.dtype == torch.float32
        g = _grad(loss, th)
        assert g.dtype == dtype
        grads.append(g.float())
    cos = torch.nn.functional.cosine_similarity(grads[0].flatten(), grads[1].flatten(), dim=0)
    assert cos > 0.98


def test_fake_score_loss_weightings() -> None:
    x0 = torch.randn(3, 2, 4, 4)
    sigma = torch.tensor([0.1, 1.0, 10.0])
    pred = x0 + 0.1
    edm = fake_score_loss(pred, x0, sigma, "edm", sigma_data=0.5)
    lam = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
    torch.testing.assert_close(edm, lam * 0.01)
    torch.testing.assert_close(fake_score_loss(pred, x0, sigma, "eps"), 0.01 / sigma**2)
    assert fake_score_loss(x0, x0, sigma).abs().max() == 0
    x0g = x0.clone().requires_grad_()
    fake_score_loss(pred.clone().requires_grad_(), x0g, sigma).sum().backward()
    assert x0g.grad is None  # the generator gets nothing from the fake-score loss
    with pytest.raises(UsageError):
        fake_score_loss(pred, x0, sigma, "v")  # type: ignore[arg-type]


def test_discriminator_optimum_is_the_log_ratio() -> None:
    """At l = log(q/p) the balanced BCE is stationary under l -> l + c and beats nearby logits."""
    gen = torch.Generator().manual_seed(8)
    real = 0.7 + 0.5 * torch.randn(200_000, generator=gen)  # q = N(0.7, 0.25)
    fake = 0.1 + 0.9 * torch.randn(200_000, generator=gen)  # p = N(0.1, 0.81)

    def log_ratio(x: torch.Tensor) -> torch.Tensor:
        lq = -0.5 * (x - 0.7) ** 2 / 0.25 - 0.5 * torch.log(torch.tensor(0.25))
        lp = -0.5 * (x - 0.1) ** 2 / 0.81 - 0.5 * torch.log(torch.tensor(0.81))
        return lq - lp

    shift = torch.zeros((), requires_grad=True)
    best = discriminator_loss(log_ratio(real) + shift, log_ratio(fake) + shift)
    best.backward()
    assert abs(float(shift.grad)) < 0.01
    for c in (-0.3, 0.3):
        assert discriminator_loss(log_ratio(real) + c, log_ratio(fake) + c) > best.detach()
    assert discriminator_loss(1.1 * log_ratio(real), 1.1 * log_ratio(fake)) > best.detach()


def test_ratio_counts_clamped_and_nonfinite() -> None:
    est = ratio_from_logits(torch.tensor([0.0, 7.0, -9.0, float("nan"), float("inf"), 1.0]), clamp=5.0)
    assert est.n_clamped == 2 and est.n_nonfinite == 2
    torch.testing.assert_close(est.log_r, torch.tensor([0.0, 5.0, -5.0, 0.0, 0.0, 1.0]))
    assert est.moves.tolist() == [True, False, False, False, False, True]
    assert torch.isfinite(est.r).all() and not est.log_r.requires_grad


def test_regression_loss() -> None:
    x0 = torch.zeros(2, 3, requires_grad=True)
    target = torch.ones(2, 3)
    loss = regression_loss(x0, target)
    torch.testing.assert_close(loss, torch.ones(2))
    loss.sum().backward()
    torch.testing.assert_close(x0.grad, torch.full((2, 3), -2 / 3))


def test_unknown_preset_lists_valid_names() -> None:
    with pytest.raises(UsageError) as err:
        get_preset("uni-kl")
    with pytest.raises(UsageError) as err2:
        get_preset("dreamfusion")
    assert "unknown preset" in str(err.value) and "rkl" in str(err.value)
    msg = str(err2.value)
    assert "\n" not in msg and all(n in msg for n in PRESET_NAMES)
    with pytest.raises(UsageError, match="weighting"):
        get_preset("uni-fkl").with_options(weighting="nope")
    assert get_preset("uni-alpha(0.5)").divergence.name == "alpha(0.5)"
    assert get_preset("fdistill-0.4*fkl+0.6*rkl").form == "integral"


@pytest.mark.parametrize("name", ["fkl", "jeffreys", "js", "chi2"])
def test_frozen_ratio_drops_only_the_motion_terms(denoisers, name: str) -> None:
    """A sample whose ratio is a constant (clamped logit) gets ``h(r)`` times the ratio-free (rkl) loss, in
    value and gradient; samples whose ratio moves keep all four terms (the default)."""
    theta, sigma, noise, log_r = _batch(seed=3)
    x0, x_t, d_q, d_p = _eval(denoisers, theta, sigma, noise)
    div = get_divergence(name)
    moves = torch.tensor([True, False, True, False])
    mixed = expanded_loss(_out(x0, x_t, sigma, d_q, d_p, log_r, moves), divergence=div)
    full = expanded_loss(_out(x0, x_t, sigma, d_q, d_p, log_r), divergence=div)
    frozen = div.h(log_r.exp()) * expanded_loss(_out(x0, x_t, sigma, d_q, d_p), divergence=get_divergence("rkl"))
    want = torch.where(moves, full, frozen)
    torch.testing.assert_close(mixed, want)
    for i in range(4):
        torch.testing.assert_close(_grad(mixed[i], theta), _grad(want[i], theta))
    assert not torch.allclose(_grad(full[1], theta), _grad(frozen[1], theta))  # the motion terms matter here


def test_expanded_rkl_without_the_teacher_jacobian_is_vsd_plus_the_fake_jacobian_term() -> None:
    """Linear denoisers ``D_q = B x``, ``D_p = A x``: the uni-rkl gradient w.r.t. ``x0`` is
    ``(2 / sigma^4) [(D_p - D_q) - Aᵀ(D_p - x0)]`` with ``D_q`` detached, and the live teacher adds
    ``-(2 / sigma^4) Bᵀ(x0 - D_q)`` (its Jacobian term, which ``GenerateConfig.teacher_jacobian`` keeps)."""
    gen = torch.Generator().manual_seed(7)
    n, d = 3, 12
    a_mat, b_mat = (0.3 * torch.randn(d, d, generator=gen, dtype=torch.float64) for _ in range(2))
    x0 = torch.randn(n, d, generator=gen, dtype=torch.float64).requires_grad_()
    sigma = torch.tensor([0.4, 1.0, 3.0], dtype=torch.float64)
    x_t = x0 + sigma[:, None] * torch.randn(n, d, generator=gen, dtype=torch.float64)
    d_p, d_q = x_t @ a_mat.T, x_t @ b_mat.T
    s4 = sigma[:, None] ** 4
    rkl = get_divergence("rkl")
    detached = _grad(expanded_loss(_out(x0, x_t, sigma, d_q.detach(), d_p), divergence=rkl), x0)
    want = 2 / s4 * ((d_p - d_q) - (d_p - x0) @ a_mat).detach()
    torch.testing.assert_close(detached, want)
    live = _grad(expanded_loss(_out(x0, x_t, sigma, d_q, d_p), divergence=rkl), x0)
    torch.testing.assert_close(live, want - (2 / s4 * (x0 - d_q) @ b_mat).detach())
