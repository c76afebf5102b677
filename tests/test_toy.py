"""The 2-D toy: analytic teacher, metrics, teacher-network fit, a short distillation run, CLI and bench output."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from uni3d.cli.toy import add_commands
from uni3d.diffusion.edm import lognormal_sigma
from uni3d.errors import UsageError
from uni3d.tasks.toy.config import ToyConfig
from uni3d.tasks.toy.fit import FitConfig, load_or_fit
from uni3d.tasks.toy.metrics import energy_distance, evaluate, make_reference, mode_stats
from uni3d.tasks.toy.teacher import RingTeacher
from uni3d.tasks.toy.train import run_toy

TEACHER = RingTeacher()
SMALL_FIT = FitConfig(width=64, depth=3, steps=300, batch_size=512, lr=3e-3)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding the small teacher network, fitted once for the module."""
    path = tmp_path_factory.mktemp("cache")
    load_or_fit(TEACHER, SMALL_FIT, path)
    return path


def _small(preset: str, steps: int) -> ToyConfig:
    return ToyConfig(preset=preset, steps=steps, batch_size=128, eval_samples=800, fit=SMALL_FIT)


@pytest.mark.parametrize("sigma", [0.0, 0.05, 0.5, 3.0])
def test_teacher_score_is_the_gradient_of_its_log_density(sigma: float) -> None:
    x = (3 * torch.randn(64, 2, dtype=torch.float64)).requires_grad_(True)
    (grad,) = torch.autograd.grad(TEACHER.log_prob(x, sigma).sum(), x)
    torch.testing.assert_close(TEACHER.score(x.detach(), sigma), grad)


@pytest.mark.parametrize("sigma", [0.05, 0.5, 3.0])
def test_teacher_denoiser_is_tweedie(sigma: float) -> None:
    x = 3 * torch.randn(64, 2, dtype=torch.float64)
    s = torch.full((64,), sigma, dtype=torch.float64)
    torch.testing.assert_close(TEACHER.denoiser(x, s), x + sigma**2 * TEACHER.score(x, sigma))


def test_teacher_denoiser_is_the_posterior_mean() -> None:
    """Monte Carlo over exact samples: E[x0 | x_t = q] = E[x0 N(q; x0, s^2)] / E[N(q; x0, s^2)] equals D(q)."""
    gen = torch.Generator().manual_seed(0)
    x0 = TEACHER.sample(400_000, gen).double()
    sigma = 1.0
    query = torch.tensor([[1.0, 0.5], [-2.0, 0.3], [0.0, 0.0]], dtype=torch.float64)
    log_w = -(query[:, None, :] - x0[None]).pow(2).sum(-1) / (2 * sigma**2)
    mc = torch.softmax(log_w, dim=1) @ x0
    torch.testing.assert_close(mc, TEACHER.denoiser(query, torch.full((3,), sigma)), atol=0.02, rtol=0)


def test_teacher_samples_cover_the_ring_evenly() -> None:
    stats = mode_stats(TEACHER.sample(8000, torch.Generator().manual_seed(1)), TEACHER)
    assert stats.modes_covered == 8
    assert stats.near_share > 0.98
    assert max(abs(s - 1 / 8) for s in stats.shares) < 0.02


def test_bad_teacher_settings_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        RingTeacher(std=0.0)


def test_energy_distance_floor_and_sensitivity() -> None:
    ref = make_reference(TEACHER, 1000, seed=3)
    gen = torch.Generator().manual_seed(4)
    same = energy_distance(TEACHER.sample(1000, gen), ref.samples)
    assert 0 < ref.floor < 0.01
    assert same == pytest.approx(ref.floor, rel=1.0)
    assert energy_distance(ref.samples + 0.5, ref.samples) > 20 * ref.floor
    assert energy_distance(ref.samples, ref.samples) == pytest.approx(0.0, abs=1e-12)


def test_mode_counting_on_constructed_samples() -> None:
    means = TEACHER.means()
    five_modes = means[:5].repeat_interleave(20, dim=0)
    far = torch.tensor([[0.0, 0.0]] * 10)
    x = torch.cat([five_modes, far, means[5:6].repeat(3, 1)])  # 100 on 5 modes, 10 far, 3 (2.7%) on mode 5
    stats = mode_stats(x, TEACHER)
    assert stats.modes_covered == 5
    assert stats.near_share == pytest.approx(103 / 113)
    assert stats.shares[5] == pytest.approx(3 / 113)
    assert stats.shares[7] == 0


def test_nonfinite_samples_are_counted_not_dropped() -> None:
    ref = make_reference(TEACHER, 200, seed=0)
    x = ref.samples.clone()
    x[:7, 0] = float("nan")
    m = evaluate(x, ref.samples, ref.floor, TEACHER)
    assert m.nonfinite == 7
    assert m.energy_distance is None
    assert m.near_share == pytest.approx(mode_stats(x[7:], TEACHER).near_share * 193 / 200)


def test_teacher_network_fit_is_cached_and_close(cache_dir: Path) -> None:
    net, cached = load_or_fit(TEACHER, SMALL_FIT, cache_dir)
    assert cached
    gen = torch.Generator().manual_seed(0)
    sigma = torch.full((2000,), 2.5)
    x_t = TEACHER.sample(2000, gen) + 2.5 * torch.randn(2000, 2, generator=gen)
    err = (net(x_t, sigma) - TEACHER.denoiser(x_t, sigma)).norm(dim=1).mean()
    assert err < 0.2 * TEACHER.radius


def test_short_uni_rkl_run_improves_on_its_initialisation(cache_dir: Path, tmp_path: Path) -> None:
    init = run_toy(_small("uni-rkl", 0), cache_dir=cache_dir, progress=False)
    result = run_toy(_small("uni-rkl", 150), out=tmp_path / "run", cache_dir=cache_dir, progress=False)
    assert result.metrics.nonfinite == 0
    assert result.metrics.energy_distance < init.metrics.energy_distance
    for name in ("config.json", "metrics.json", "samples.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["preset"] == "uni-rkl" and saved["fit"]["width"] == SMALL_FIT.width


@pytest.mark.parametrize("preset", ["uni-fkl", "uni-js"])
def test_ratio_weighted_uni_presets_improve_and_stay_finite(preset: str, cache_dir: Path) -> None:
    """The presets that diverged before the generator loss's noise levels were truncated at gen_sigma_min."""
    init = run_toy(_small(preset, 0), cache_dir=cache_dir, progress=False)
    result = run_toy(_small(preset, 400), cache_dir=cache_dir, progress=False)
    assert result.metrics.nonfinite == 0 and result.counters.skipped_generator_steps == 0
    assert result.metrics.energy_distance < 0.25 * init.metrics.energy_distance
    assert result.counters.ratio_clamped < 0.01 * result.counters.ratio_evaluations


def test_gen_sigma_min_truncates_the_generator_noise_levels() -> None:
    s = lognormal_sigma(20000, -0.5, 1.0, torch.Generator().manual_seed(0), sigma_min=0.3)
    assert s.min() >= 0.3 and (s < 0.33).sum() > 100
    assert not torch.equal(s, lognormal_sigma(20000, -0.5, 1.0, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("preset", ["uni-jeffreys", "fdistill-chi2", "dmd", "sds"])
def test_short_runs_stay_finite_and_count_ratio_repairs(preset: str, cache_dir: Path) -> None:
    result = run_toy(_small(preset, 20), cache_dir=cache_dir, progress=False)
    assert result.metrics.nonfinite == 0
    assert result.counters.skipped_generator_steps == 0
    uses_ratio = preset in ("uni-jeffreys", "fdistill-chi2")
    assert (result.counters.ratio_evaluations > 0) == uses_ratio


def test_bad_config_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        ToyConfig(preset="uni-nope")
    with pytest.raises(UsageError):
        replace(ToyConfig(), batch_size=0)


def test_toy_cli_json_with_a_config_file(cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "small.json"
    config.write_text(json.dumps({"preset": "sid", "eval_samples": 500, "fit": asdict(SMALL_FIT)}))
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    argv = ["toy", "--config", str(config), "--preset", "vsd", "--steps", "2", "--json"]
    args = parser.parse_args([*argv, "--out", str(tmp_path / "run"), "--cache-dir", str(cache_dir)])
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["preset"] == "vsd" and report["n_samples"] == 500 and report["fit_cached"]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert ToyConfig.from_dict(saved) == ToyConfig(preset="vsd", steps=2, eval_samples=500, fit=SMALL_FIT)


def test_unknown_config_keys_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="unknown toy setting"):
        ToyConfig.from_dict({"stepz": 3})
    with pytest.raises(UsageError, match=r"unknown toy\.fit setting"):
        ToyConfig.from_dict({"fit": {"widht": 3}})
