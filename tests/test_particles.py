"""Particles: several radiance fields optimised together, sharing one fake score and ratio head (tiny prior)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import pytest
import torch
from conftest import TINY_GENERATE

from uni3d.cli.main import main
from uni3d.errors import UsageError
from uni3d.tasks.text_to_3d.config import GenerateConfig
from uni3d.tasks.text_to_3d.memory import check_particles_fit

SMALL: dict[str, Any] = TINY_GENERATE
REFERENCE = {
    "sds": ([-2856.72216796875, -48.45685958862305, -441.5908203125], 602.2070708442809),
    "uni-jeffreys": ([42.218849182128906, 49.70356750488281, 380.7559814453125], 607.9422948337831),
}
"""Losses and the field's sum of absolute parameters after 3 steps of the run before particles existed (the same
settings, seed 0, one torch thread)."""

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(folder: Path, **changes: Any) -> GenerateConfig:
    return GenerateConfig.from_dict({"prompt": "a red cube", "prior": str(folder), **SMALL, **changes})


def _state(out: Path) -> dict[str, Any]:
    return torch.load(out / "checkpoint.pt")


@pytest.mark.parametrize("preset", sorted(REFERENCE))
def test_one_particle_reproduces_the_run_before_particles(tiny_prior, tmp_path: Path, preset: str) -> None:
    from uni3d.tasks.text_to_3d.run import generate

    folder, prior = tiny_prior
    generate(_cfg(folder, preset=preset), tmp_path, prior=prior, progress=False)
    state = _state(tmp_path)
    losses, total = REFERENCE[preset]
    assert state["losses"] == pytest.approx(losses, rel=1e-4)
    assert float(sum(v.double().abs().sum() for v in state["renderer"].values() if v.is_floating_point())) == (
        pytest.approx(total, rel=1e-5)
    )
    assert not any(key.startswith("0.") for key in state["renderer"])  # the single field's own keys, as before


def test_particles_share_one_fake_score_and_each_gets_an_asset(
    tiny_prior, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from uni3d.tasks.text_to_3d.run import generate
    from uni3d.tasks.text_to_3d.trainer import TextTo3D

    folder, prior = tiny_prior
    cfg = _cfg(folder, preset="uni-jeffreys", particles=3, fake_estimator="lora").resolved(16)
    torch.manual_seed(0)
    trainer = TextTo3D(cfg, prior)
    batches: list[int] = []
    denoise = trainer.fake.denoise

    def spy(x: torch.Tensor, *args: Any) -> torch.Tensor:
        batches.append(len(x))
        return denoise(x, *args)

    trainer.fake.denoise = spy  # type: ignore[method-assign]
    before = [torch.cat([p.detach().flatten().clone() for p in r.parameters()]) for r in trainer.renderers]
    draw = trainer.draw(0, train_generator=True)
    assert draw.groups == 3 and len(draw.x0) == 3 and not torch.equal(draw.x0[0], draw.x0[1])
    assert trainer.train_step() is not None
    # the generator pass, the ratio head's real side, the LoRA's own step: each holds one sample per particle
    assert batches == [3, 3, 3]
    after = [torch.cat([p.detach().flatten() for p in r.parameters()]) for r in trainer.renderers]
    assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=True))  # every field moved

    out = tmp_path / "run"
    metrics = generate(_cfg(folder, preset="vsd", particles=5), out, prior=prior, progress=False)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({k: v for k, v in _cfg(folder, preset="vsd", particles=5).as_dict().items()}))
    assert main(["generate", "a red cube", "--config", str(config), "--out", str(out), "--quiet"]) == 0  # finished
    report = capsys.readouterr().out
    assert "particle 0" in report and "particle 1" in report and "contact_sheet.png" in report
    assert [p["particle"] for p in metrics["particles"]] == [0, 1, 2, 3, 4]
    for k in range(5):
        for name in ("model.glb", "model.obj", "preview.png", metrics["particles"][k]["files"][3]):
            assert (out / f"particle-{k}" / name).is_file(), name
    assert (out / "contact_sheet.png").is_file() and not (out / "model.glb").exists()
    sheet = iio.imread(out / "contact_sheet.png")
    assert sheet.shape[:2] == (5 * 16, 4 * 16)  # one row of 4 views (16 px) per particle, all 20 tiles
    assert any(key.startswith("1.") for key in _state(out)["renderer"])  # both fields are in the checkpoint


def test_rotating_particles_train_only_the_ones_drawn(tiny_prior) -> None:
    from uni3d.tasks.text_to_3d.trainer import TextTo3D

    folder, prior = tiny_prior
    cfg = _cfg(folder, preset="vsd", particles=3, particles_per_step=1).resolved(16)
    torch.manual_seed(0)
    trainer = TextTo3D(cfg, prior)
    assert [trainer.active_particles(s) for s in range(4)] == [[0], [1], [2], [0]]
    before = [torch.cat([p.detach().flatten().clone() for p in r.parameters()]) for r in trainer.renderers]
    assert trainer.train_step() is not None
    after = [torch.cat([p.detach().flatten() for p in r.parameters()]) for r in trainer.renderers]
    assert [not torch.equal(a, b) for a, b in zip(before, after, strict=True)] == [True, False, False]


@pytest.mark.parametrize("estimator", ["lora", "particles"])
def test_resume_with_particles_matches_the_uninterrupted_run(tiny_prior, tmp_path: Path, estimator: str) -> None:
    from uni3d.tasks.text_to_3d.run import generate

    folder, prior = tiny_prior
    cfg = _cfg(folder, preset="uni-jeffreys", particles=2, steps=4, fake_estimator=estimator)
    generate(cfg, tmp_path / "whole", prior=prior, progress=False)

    def interrupt(step: int, stats: object) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(cfg, tmp_path / "part", prior=prior, progress=False, callback=interrupt)
    assert _state(tmp_path / "part")["step"] == 2
    metrics = generate(cfg, tmp_path / "part", prior=prior, progress=False)
    assert metrics["resumed_from_step"] == 2 and metrics["steps"] == 4
    whole, resumed = _state(tmp_path / "whole"), _state(tmp_path / "part")
    assert resumed["losses"] == pytest.approx(whole["losses"], rel=1e-5, abs=1e-6)
    assert ("fake" in whole) == (estimator == "lora") and "head" in whole
    for key in [k for k in ("renderer", "fake", "head") if k in whole]:
        for name, value in whole[key].items():
            torch.testing.assert_close(resumed[key][name], value, rtol=1e-5, atol=1e-6, msg=f"{key}.{name}")


def test_bad_particle_settings_are_one_line_errors_before_any_work(
    tiny_prior, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from uni3d.tasks.text_to_3d.run import generate

    folder, prior = tiny_prior
    for bad, needle in ((0, "particles >= 1"), (-2, "particles >= 1"), (1.5, "must be an integer")):
        with pytest.raises(UsageError, match=needle) as err:
            _cfg(folder, particles=bad)
        assert "\n" not in str(err.value)
    with pytest.raises(UsageError, match="particles_per_step"):
        _cfg(folder, particles=2, particles_per_step=3)
    assert main(["generate", "a red cube", "--prior", str(folder), "--particles", "0", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    many = _cfg(folder, particles=10**6)
    with pytest.raises(UsageError, match="particles need about .* GiB"):
        generate(many, tmp_path / "many", prior=prior, progress=False)
    assert not (tmp_path / "many").exists()  # nothing written
    check_particles_fit(_cfg(folder, particles=4), 16, "cpu")  # a few small particles fit
    saved = json.loads(json.dumps(_cfg(folder, particles=2).as_dict()))
    assert GenerateConfig.from_dict(saved).particles == 2


def test_seeded_noise_is_each_particles_own_and_used_by_every_draw(tiny_prior) -> None:
    from uni3d.tasks.text_to_3d.trainer import TextTo3D

    folder, prior = tiny_prior
    three = TextTo3D(_cfg(folder, preset="sds", particles=3, noise="seeded").resolved(16), prior)
    two = TextTo3D(_cfg(folder, preset="sds", particles=2, noise="seeded").resolved(16), prior)
    other_seed = TextTo3D(_cfg(folder, preset="sds", particles=2, noise="seeded", seed=1).resolved(16), prior)
    assert three.seeded_noise is not None and two.seeded_noise is not None and other_seed.seeded_noise is not None
    torch.testing.assert_close(three.seeded_noise[:2], two.seeded_noise)  # particle k's noise: (seed, k) alone
    assert not torch.allclose(three.seeded_noise[0], three.seeded_noise[1])
    assert not torch.allclose(two.seeded_noise, other_seed.seeded_noise)
    draw = three.draw(0, train_generator=True)
    den = three.denoise(draw)
    n = (den.x_t - draw.x0) / den.sigma.view(-1, 1, 1, 1)
    torch.testing.assert_close(n, three.seeded_noise, rtol=1e-4, atol=1e-4)  # x_t = x0 + sigma n_k, every step
    fresh = TextTo3D(_cfg(folder, preset="sds", particles=2, noise="fresh").resolved(16), prior)
    assert fresh.seeded_noise is None
    # the defaults: several particles get seeded noise and the descending schedule, one keeps today's sampling
    assert (_cfg(folder, particles=2).resolved(16).noise, _cfg(folder, particles=2).resolved(16).t_schedule) == (
        "seeded",
        "descending",
    )
    assert (_cfg(folder).resolved(16).noise, _cfg(folder).resolved(16).t_schedule) == ("fresh", "uniform")
    with pytest.raises(UsageError, match="noise one of fresh, seeded"):
        _cfg(folder, noise="pink")
    with pytest.raises(UsageError, match="timestep schedule"):
        _cfg(folder, t_schedule="ascending")


def test_lora_trains_at_the_generators_noise_levels_when_asked(tiny_prior) -> None:
    from uni3d.tasks.text_to_3d.trainer import TextTo3D

    folder, prior = tiny_prior
    high = prior.sigma_at(torch.tensor(0.7 * (prior.num_train_timesteps - 1)))
    seen: dict[str, list[float]] = {}
    for schedule in ("uniform", "generator"):
        torch.manual_seed(0)
        cfg = _cfg(folder, preset="vsd", particles=2, steps=100, lora_t_schedule=schedule, fake_estimator="lora")
        trainer = TextTo3D(cfg, prior)
        assert trainer.fake is not None
        sigmas: list[float] = []
        denoise = trainer.fake.denoise

        def record(x, sigma, *args, _denoise=denoise, _sigmas=sigmas):
            _sigmas.extend(sigma.tolist())
            return _denoise(x, sigma, *args)

        trainer.fake.denoise = record  # type: ignore[method-assign]
        for _ in range(10):
            trainer.fake_score_loss(trainer.draw(0, train_generator=False))
        seen[schedule] = sigmas
    # step 0 of the descending schedule draws t near 0.98 T: the LoRA follows it only when asked to
    assert min(seen["generator"]) > float(high)
    assert min(seen["uniform"]) < float(high)
    with pytest.raises(UsageError, match="lora_t_schedule one of uniform, generator"):
        _cfg(folder, lora_t_schedule="late")
