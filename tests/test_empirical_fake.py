"""The particles' empirical denoiser as the fake score (``fake_estimator="particles"``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TINY_GENERATE

from uni3d.diffusion.empirical import empirical_denoise
from uni3d.errors import UsageError
from uni3d.tasks.text_to_3d.config import GenerateConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _mixture_denoiser(x_t: torch.Tensor, sigma: float, samples: torch.Tensor) -> torch.Tensor:
    """Tweedie's ``D = x + sigma^2 grad log q_sigma(x)`` with ``q_sigma`` the Gaussian mixture, by autograd."""
    x = x_t.detach().double().requires_grad_(True)
    sq = (x.flatten().unsqueeze(0) - samples.double().flatten(1)).pow(2).sum(1)
    log_q = torch.logsumexp(-sq / (2 * sigma**2), 0) - math.log(len(samples))
    (grad,) = torch.autograd.grad(log_q, x)
    return (x + sigma**2 * grad).detach()


def test_empirical_denoiser_is_the_mixtures_posterior_mean_per_view() -> None:
    torch.manual_seed(0)
    groups, views = 3, 2
    x0 = torch.randn(groups * views, 2, 3, 3)
    sigma = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.8, 1.5])
    x_t = x0 + sigma.view(-1, 1, 1, 1) * torch.randn_like(x0)
    d = empirical_denoise(x_t, sigma, x0, groups=groups)
    for row in range(len(x0)):
        same_view = x0[row % views :: views]  # the groups' samples seen from this row's view
        expected = _mixture_denoiser(x_t[row], float(sigma[row]), same_view)
        assert torch.allclose(d[row].double(), expected, atol=1e-5)


def test_empirical_denoiser_limits() -> None:
    torch.manual_seed(1)
    x0 = torch.randn(4, 3, 2, 2)
    # one sample: the sample itself, whatever the noise (SDS's D_p = x0)
    x_t = x0 + 3.0 * torch.randn_like(x0)
    assert torch.equal(empirical_denoise(x_t, torch.full((4,), 3.0), x0, groups=1), x0)
    # very high noise: the mean of the samples at that view; very low: the nearest sample
    far = empirical_denoise(x_t, torch.full((4,), 1e4), x0, groups=4)
    assert torch.allclose(far, x0.mean(0, keepdim=True).expand_as(x0), atol=1e-4)
    near = empirical_denoise(x0 + 1e-3 * torch.randn_like(x0), torch.full((4,), 1e-2), x0, groups=4)
    assert torch.allclose(near, x0, atol=1e-6)
    with pytest.raises(ValueError, match="groups"):
        empirical_denoise(x_t[:3], torch.ones(3), x0[:3], groups=2)


def _cfg(folder: Path, **changes: Any) -> GenerateConfig:
    return GenerateConfig.from_dict({"prompt": "a red cube", "prior": str(folder), **TINY_GENERATE, **changes})


def _fields(trainer: Any) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for r in trainer.renderers for p in r.parameters()])


def test_one_particle_with_the_empirical_fake_score_is_sds(tiny_prior) -> None:
    from uni3d.tasks.text_to_3d.trainer import TextTo3D

    folder, prior = tiny_prior
    fields = []
    for changes in ({"preset": "sds"}, {"preset": "vsd", "fake_estimator": "particles"}):
        torch.manual_seed(0)
        trainer = TextTo3D(_cfg(folder, **changes).resolved(16), prior)
        assert trainer.fake is None
        for _ in range(3):
            assert trainer.train_step() is not None
        fields.append(_fields(trainer))
    assert torch.equal(fields[0], fields[1])


@pytest.mark.parametrize("preset", ["vsd", "uni-rkl"])
def test_particles_see_each_other_through_the_empirical_fake_score(tiny_prior, preset: str) -> None:
    from uni3d.tasks.text_to_3d.trainer import TextTo3D

    folder, prior = tiny_prior
    cfg = _cfg(folder, preset=preset, particles=3, fake_estimator="particles").resolved(16)
    torch.manual_seed(0)
    trainer = TextTo3D(cfg, prior)
    draw = trainer.draw(0, train_generator=True)
    views = draw.context
    assert torch.equal(views.c2w[0], views.c2w[1]) and torch.equal(views.c2w[0], views.c2w[2])  # one camera, 3 renders

    def gradient_of_particle_0(x0: torch.Tensor) -> torch.Tensor:
        den = trainer.denoise(type(draw)(x0, views, groups=3))
        assert den.d_fake is not None
        return den.d_fake[0]

    torch.manual_seed(1)
    base = gradient_of_particle_0(draw.x0.detach())
    moved = draw.x0.detach().clone()
    moved[2] += 5.0  # another particle's render changes particle 0's fake score
    torch.manual_seed(1)
    assert not torch.allclose(gradient_of_particle_0(moved), base)
    assert trainer.train_step() is not None


def test_a_ratio_preset_reads_the_teachers_features_without_a_lora(tiny_prior) -> None:
    from uni3d.tasks.text_to_3d.trainer import TextTo3D

    folder, prior = tiny_prior
    cfg = _cfg(folder, preset="uni-jeffreys", particles=2, fake_estimator="particles").resolved(16)
    torch.manual_seed(0)
    trainer = TextTo3D(cfg, prior)
    assert trainer.fake is None and trainer.head is not None
    hooks = len(prior.unet.mid_block._forward_hooks)
    draw = trainer.draw(0, train_generator=True)
    den = trainer.denoise(draw)
    channels = int(prior.unet.config.block_out_channels[-1])
    assert den.features is not None and den.features.shape[:2] == (2, channels) and den.ratio_logits is not None
    real, fake = trainer.ratio_logits(draw, den)
    assert real.shape == fake.shape == (2,) and torch.isfinite(real).all()
    assert len(prior.unet.mid_block._forward_hooks) == hooks  # the teacher keeps no hook
    head = [p.detach().clone() for p in trainer.head.parameters()]
    for _ in range(2):
        stats = trainer.train_step()
        assert stats is not None and stats.ratio_loss is not None and stats.fake_loss is None
    assert any(not torch.equal(a, b) for a, b in zip(head, trainer.head.parameters(), strict=True))


@pytest.mark.parametrize("preset", ["sds", "dsd"])
def test_the_empirical_fake_score_needs_a_learned_fake_score(tiny_prior, preset: str) -> None:
    folder, _ = tiny_prior
    with pytest.raises(UsageError, match="fake_estimator 'particles'"):
        _cfg(folder, preset=preset, fake_estimator="particles")
    with pytest.raises(UsageError, match="fake_estimator one of lora, particles"):
        _cfg(folder, fake_estimator="kde")


def test_several_particles_default_to_the_empirical_fake_score(tiny_prior) -> None:
    folder, _ = tiny_prior
    resolved = {
        (preset, k): _cfg(folder, preset=preset, particles=k).resolved(16).fake_estimator
        for preset in ("vsd", "uni-jeffreys", "sds")
        for k in (1, 4)
    }
    assert resolved == {
        ("vsd", 1): "lora",
        ("vsd", 4): "particles",
        ("uni-jeffreys", 1): "lora",
        ("uni-jeffreys", 4): "particles",
        ("sds", 1): "lora",  # no fake score: the inert value
        ("sds", 4): "lora",
    }
    assert _cfg(folder, preset="vsd", particles=4, fake_estimator="lora").resolved(16).fake_estimator == "lora"
