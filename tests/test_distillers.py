"""The step-changing score distillers (nfsd, asd, sdi, dsd, cfd, lmc-sds): each one's distinctive piece, and each
end to end."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TINY_GENERATE

from uni3d.diffusion.ddim import ddim_invert, ddim_path
from uni3d.errors import UsageError
from uni3d.tasks.text_to_3d.config import TEXT_TO_3D_PRESETS, GenerateConfig
from uni3d.tasks.text_to_3d.distillers import DISTILLERS, loss_preset

pytestmark = pytest.mark.usefixtures("one_thread")

MU, S = 0.3, 0.5
"""Data ``N(MU, S^2 I)``: its denoiser and probability-flow ODE are known in closed form."""


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``E[x0 | x]`` for ``x0 ~ N(MU, S^2)``, ``x = x0 + sigma n``."""
    s2 = sigma.view(-1, 1, 1, 1).square()
    return MU + S**2 / (S**2 + s2) * (x - MU)


def test_ddim_inversion_recovers_the_noise_a_sample_came_from() -> None:
    torch.manual_seed(0)
    noise = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    lo, hi = torch.full((3,), 0.002, dtype=torch.float64), 80.0
    sample = ddim_path(gaussian_denoiser, noise, lo, sigma_max=hi, steps=400)
    # the ODE's exact map: x_sigma - MU scales with sqrt(S^2 + sigma^2)
    exact = MU + (hi * noise - MU) * math.sqrt(S**2 + 0.002**2) / math.sqrt(S**2 + hi**2)
    torch.testing.assert_close(sample, exact, rtol=2e-2, atol=2e-2)
    back = ddim_invert(gaussian_denoiser, sample, torch.full((3,), hi, dtype=torch.float64), sigma_min=0.002, steps=400)
    torch.testing.assert_close(back / hi, noise, rtol=3e-2, atol=3e-2)  # the render's noise, to tolerance
    coarse = ddim_invert(gaussian_denoiser, sample, torch.full((3,), hi, dtype=torch.float64), sigma_min=0.002, steps=8)
    assert (coarse / hi - noise).abs().mean() > (back / hi - noise).abs().mean()  # error falls with the steps


def test_presets_are_listed_and_map_to_their_loss() -> None:
    assert set(DISTILLERS) <= set(TEXT_TO_3D_PRESETS)
    assert loss_preset("nfsd").name == "sds" and loss_preset("ASD").name == "vsd" and loss_preset("vsd").name == "vsd"
    assert GenerateConfig(prompt="a cube", preset="sdi").resolved(32).t_schedule == "descending"
    assert GenerateConfig(prompt="a cube", preset="nfsd").resolved(32).t_schedule == "uniform"
    with pytest.raises(UsageError, match="unknown preset 'nfds'; valid: sds, .*, nfsd, .*lmc-sds") as err:
        GenerateConfig(prompt="a cube", preset="nfds")
    assert "dmd" not in str(err.value)  # the list is of what runs in 3D


def _eps(d: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return (x - d) / sigma.view(-1, 1, 1, 1)


def test_nfsd_target_gives_the_noise_free_residual(tiny_prior) -> None:
    from uni3d.tasks.text_to_3d.distillers import NFSD_SPLIT_T, nfsd_target

    _, prior = tiny_prior
    torch.manual_seed(0)
    x0, n = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8)
    t = torch.tensor([50.0, 150.0, 400.0, 900.0])
    sigma = prior.sigma_at(t)
    x_t = x0 + sigma.view(-1, 1, 1, 1) * n
    cond, empty, neg = prior.embed(["a red cube"] * 4), prior.embed([""] * 4), prior.embed(["a blue sphere"] * 4)
    for s in (1.0, 7.5):
        target = nfsd_target(prior, x0, x_t, sigma, (cond, empty, neg), guidance=s)
        with torch.no_grad():
            eps_c, eps_u, eps_neg = (_eps(prior.denoise(x_t, sigma, c), x_t, sigma) for c in (cond, empty, neg))
        late = (t >= NFSD_SPLIT_T).view(-1, 1, 1, 1)
        delta_d = torch.where(late, eps_u - eps_neg, eps_u)
        residual = (x0 - target) / sigma.view(-1, 1, 1, 1)  # what the sds form distils
        torch.testing.assert_close(residual, delta_d + s * (eps_c - eps_u), rtol=1e-4, atol=1e-4)
    # guidance 1 and the negative prompt empty: late, the residual is eps_c - eps_u alone (no noise term)
    target = nfsd_target(prior, x0, x_t, sigma, (cond, empty, empty), guidance=1.0)
    torch.testing.assert_close(((x0 - target) / sigma.view(-1, 1, 1, 1))[2:], (eps_c - eps_u)[2:], rtol=1e-4, atol=1e-4)


def test_asd_fake_is_the_prior_later_on_the_same_noise(tiny_prior) -> None:
    from uni3d.tasks.text_to_3d.distillers import SHIFT_RATIO, shifted_fake, shifted_sigma

    _, prior = tiny_prior
    torch.manual_seed(1)
    t = torch.tensor([100.0, 500.0, 990.0, 20.0])
    sigma = prior.sigma_at(t)
    later = shifted_sigma(prior, sigma, 0.02)
    dt = prior.timestep_at(later) - t
    assert (dt >= -1e-3).all() and (dt <= SHIFT_RATIO * (t - 0.02 * 999) + 1e-3).all() and dt.max() > 1
    assert prior.timestep_at(later).max() <= 999 + 1e-3
    x0, n = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8)
    cond, uncond = prior.embed(["a red cube"] * 4), prior.embed([""] * 4)
    x_t, x_later = x0 + sigma.view(-1, 1, 1, 1) * n, x0 + later.view(-1, 1, 1, 1) * n
    d_fake = shifted_fake(prior, x0, n, sigma, later, cond)
    with torch.no_grad():
        d_s = prior.denoise(x_t, sigma, cond, uncond, 7.5)
        want = _eps(d_s, x_t, sigma) - _eps(prior.denoise(x_later, later, cond), x_later, later)
    torch.testing.assert_close((d_fake - d_s) / sigma.view(-1, 1, 1, 1), want, rtol=1e-4, atol=1e-4)


def test_sdi_noise_is_the_renders_inversion(tiny_prior) -> None:
    from uni3d.tasks.text_to_3d.distillers import inverted_input

    _, prior = tiny_prior
    x0 = torch.randn(2, 4, 8, 8)
    sigma = prior.sigma_at(torch.tensor([300.0, 700.0]))
    cond, uncond = prior.embed(["a red cube"] * 2), prior.embed([""] * 2)
    torch.manual_seed(3)
    later, noise = inverted_input(prior, x0, sigma, cond, uncond)
    step = prior.timestep_at(later) - prior.timestep_at(sigma)
    assert (step >= -1e-3).all() and (step <= 100).all()
    torch.manual_seed(3)
    again = inverted_input(prior, x0, sigma, cond, uncond)
    torch.testing.assert_close(again[1], noise)  # a function of the render and the step's random draws
    assert not torch.allclose(noise, inverted_input(prior, x0 + 1, sigma, cond, uncond)[1])  # it depends on x0
    assert 0.3 < noise.std().item() < 3  # roughly unit scale, as a noise


def test_dsd_seed_fixes_the_path(tiny_prior) -> None:
    from uni3d.tasks.text_to_3d.distillers import path_noise

    _, prior = tiny_prior
    seeds = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    later = prior.sigma_at(torch.tensor([600.0, 600.0]))
    cond, uncond = prior.embed(["a red cube"] * 2), prior.embed([""] * 2)
    a = path_noise(prior, seeds, later, cond, uncond, guidance=7.5)
    b = path_noise(prior, seeds, later, cond, uncond, guidance=7.5)
    torch.testing.assert_close(a, b)  # no randomness: the seed alone fixes the path
    other = path_noise(prior, seeds.flip(0), later, cond, uncond, guidance=7.5)
    torch.testing.assert_close(other, a.flip(0))
    assert not torch.allclose(a[0], a[1])


def test_lmc_with_an_identity_corrective_is_sds_and_the_corrective_splits_guidance_from_projection(tiny_prior) -> None:
    from uni3d.tasks.text_to_3d.corrective import ManifoldCorrective, lmc_target

    _, prior = tiny_prior
    torch.manual_seed(4)
    x0, n = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    sigma = prior.sigma_at(torch.tensor([100.0, 400.0, 800.0]))
    x_t = x0 + sigma.view(-1, 1, 1, 1) * n
    cond, uncond = prior.embed(["a red cube"] * 3), prior.embed([""] * 3)
    with torch.no_grad():
        d_c, d_u = prior.denoise(x_t, sigma, cond), prior.denoise(x_t, sigma, uncond)
    s = 7.5
    d_s = d_u + s * (d_c - d_u)
    k = ManifoldCorrective(4)
    torch.testing.assert_close(
        lmc_target(k, x0, sigma, d_cond=d_c, d_guided=d_s), d_s, rtol=1e-5, atol=1e-5
    )  # k = identity: SDS
    # a corrective that is a known linear map k(x) = a x: the pull is a (a x0 - D_c), the guidance term unchanged
    a = 0.7
    target = lmc_target(lambda x, _sigma: a * x, x0, sigma, d_cond=d_c, d_guided=d_s)
    residual = (x0 - target) / sigma.view(-1, 1, 1, 1)
    want = (s - 1) * (_eps(d_c, x_t, sigma) - _eps(d_u, x_t, sigma)) + a * (a * x0 - d_c) / sigma.view(-1, 1, 1, 1)
    torch.testing.assert_close(residual, want, rtol=1e-4, atol=1e-4)


def test_lmc_corrective_learns_the_residual_it_is_trained_on() -> None:
    """Trained on pairs ``(x, blur_t(x))`` whose corruption grows with the noise level, as a denoiser's one-step
    estimate does, the corrective's loss falls well below the identity's, at every level."""
    from uni3d.tasks.text_to_3d.corrective import CORRECTIVE_LR, ManifoldCorrective, corrective_loss

    torch.manual_seed(5)
    kernel = torch.tensor([0.25, 0.5, 0.25])
    kernel = (kernel[:, None] * kernel[None, :]).expand(4, 1, 3, 3)

    def corrupt(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:  # blur, more at larger sigma
        blurred = torch.nn.functional.conv2d(x, kernel, padding=1, groups=4)
        mix = (sigma / (1 + sigma)).view(-1, 1, 1, 1)
        return (1 - mix) * x + mix * blurred * 0.8

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(n, 4, 8, 8), torch.exp(torch.empty(n).uniform_(-3, 3))

    k = ManifoldCorrective(4)
    opt = torch.optim.Adam(k.parameters(), lr=CORRECTIVE_LR)
    x_eval, s_eval = batch(64)
    before = corrective_loss(k, x_eval, s_eval, estimate=corrupt(x_eval, s_eval)).item()
    for _ in range(300):
        x, s = batch(16)
        loss = corrective_loss(k, x, s, estimate=corrupt(x, s))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = corrective_loss(k, x_eval, s_eval, estimate=corrupt(x_eval, s_eval)).item()
    assert after < 0.2 * before, (before, after)


@pytest.mark.parametrize("preset", sorted(DISTILLERS))
def test_each_distiller_runs_end_to_end(tiny_prior, tmp_path: Path, preset: str) -> None:
    from uni3d.tasks.text_to_3d.run import generate
    from uni3d.tasks.text_to_3d.trainer import TextTo3D

    folder, prior = tiny_prior
    settings: dict[str, Any] = {"prompt": "a red cube", "prior": str(folder), **TINY_GENERATE, "preset": preset}
    cfg = GenerateConfig.from_dict(settings)
    trainer = TextTo3D(cfg.resolved(16), prior)
    assert trainer.fake is None and trainer.head is None  # no LoRA, no ratio head
    assert (trainer.corrective is not None) == (preset == "lmc-sds")  # nothing else but the field trains
    metrics = generate(cfg, tmp_path, prior=prior, progress=False)
    assert metrics["status"] == "done" and metrics["steps"] == 3
    state = torch.load(tmp_path / "checkpoint.pt")
    assert all(math.isfinite(x) for x in state["losses"]) and len(state["losses"]) == 3
    assert (tmp_path / "model.glb").is_file()


def test_cfd_noise_is_attached_to_the_surface_and_gaussian() -> None:
    from uni3d.tasks.text_to_3d.distillers import consistent_noise, noise_grid

    grid = noise_grid(0, 0, 4, resolution=32)
    torch.testing.assert_close(grid, noise_grid(0, 0, 4, resolution=32))
    assert not torch.allclose(grid, noise_grid(0, 1, 4, resolution=32))  # each particle its own grid
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(1, 16, 16, 3, generator=gen) * 2 - 1  # one view: 16 x 16 rays, 4 x 4 latent pixels
    # camera 2 sees each latent pixel's surface points through its rays in another order; camera 3 sees the
    # whole surface mirrored, so each point lands in the opposite latent pixel
    same = points.view(1, 4, 4, 4, 4, 3).flip(2, 4).reshape(1, 16, 16, 3)
    mirrored = points.view(1, 4, 4, 4, 4, 3).flip(1, 3).reshape(1, 16, 16, 3)
    hit = torch.ones(3, 16, 16, dtype=torch.bool)
    hit[:2, :4, :4] = False  # latent pixel (0, 0) of cameras 1 and 2 sees no surface
    hit[2, 12:, 12:] = False  # the same rays, mirrored, for camera 3
    background = torch.randn(3, 4, 4, 4, generator=gen)
    noise = consistent_noise(grid, background, torch.cat([points, same, mirrored]), hit, bound=1.0, latent=4)
    torch.testing.assert_close(noise[1, :, 1:], noise[0, :, 1:])  # same surface points: same noise
    torch.testing.assert_close(noise[2].flip(1, 2)[:, 1:], noise[0, :, 1:])  # the same points from another camera
    torch.testing.assert_close(noise[:2, :, 0, 0], background[:2, :, 0, 0])  # no surface: the background noise
    assert not torch.allclose(noise[0, :, 1, 1], noise[0, :, 2, 2])
    many = consistent_noise(
        grid, torch.zeros(64, 4, 4, 4), torch.rand(64, 16, 16, 3, generator=gen) * 2 - 1,
        torch.ones(64, 16, 16, dtype=torch.bool), bound=1.0, latent=4,
    )  # fmt: skip
    assert abs(many.mean().item()) < 0.05 and abs(many.std().item() - 1) < 0.05  # N(0, 1) per pixel
