"""Named recipes: the prior and preset pick one, given settings win over it, resume keeps it (tiny SD folder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TINY_GENERATE

from uni3d.cli.main import main
from uni3d.errors import UsageError
from uni3d.tasks.text_to_3d.config import EMBEDDED_PRIOR, GenerateConfig
from uni3d.tasks.text_to_3d.recipes import RECIPES

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_prior_and_preset_pick_the_recipe_and_given_settings_win(tiny_prior) -> None:
    folder, _ = tiny_prior
    embedded = GenerateConfig.from_dict({"prompt": "a red cube"})
    assert embedded.recipe == "embedded"
    assert {k: v for k, v in embedded.as_dict().items() if k != "recipe"} == {
        k: v for k, v in GenerateConfig(prompt="a red cube").as_dict().items() if k != "recipe"
    }  # the embedded prior's recipe is today's defaults, bit for bit
    picked = {
        preset: GenerateConfig.from_dict({"prompt": "a hamburger", "prior": str(folder), "preset": preset}).recipe
        for preset in ("sds", "nfsd", "vsd", "asd", "uni-jeffreys", "sid")
    }
    assert picked == {
        "sds": "sd-sds",
        "nfsd": "sd-sds",
        "vsd": "sd-vsd",
        "asd": "sd-vsd",
        "uni-jeffreys": "sd-uni",
        "sid": "sd-uni",
    }
    sds = GenerateConfig.from_dict({"prompt": "a hamburger", "prior": str(folder)})
    assert (sds.guidance_scale, sds.steps, sds.albedo_until) == (100.0, 10000, 0.2)
    assert sds.field.blob_density == 10.0 and sds.field.hidden == GenerateConfig(prompt="x").field.hidden
    vsd = GenerateConfig.from_dict({"prompt": "a hamburger", "prior": str(folder), "preset": "vsd"})
    assert (vsd.guidance_scale, vsd.t_max_end, vsd.render_milestone) == (7.5, 0.5, (0.2, 512))
    mine = GenerateConfig.from_dict(
        {"prompt": "a hamburger", "prior": str(folder), "guidance_scale": 30.0, "field": {"blob_radius": 0.3}}
    )
    assert mine.guidance_scale == 30.0 and mine.steps == 10000  # the given setting wins, the rest is the recipe's
    assert mine.field.blob_radius == 0.3 and mine.field.blob_density == 10.0
    named = GenerateConfig.from_dict({"prompt": "a red cube", "prior": EMBEDDED_PRIOR, "recipe": "sd-vsd"})
    assert named.recipe == "sd-vsd" and named.steps == RECIPES["sd-vsd"]["steps"]
    with pytest.raises(UsageError, match=r"unknown recipe 'fast'; valid: embedded, sd-sds, sd-vsd, sd-uni"):
        GenerateConfig.from_dict({"prompt": "a red cube", "recipe": "fast"})


def test_the_saved_config_records_the_recipe_and_resume_keeps_it(tiny_prior, tmp_path: Path) -> None:
    from uni3d.tasks.text_to_3d.run import generate

    folder, prior = tiny_prior
    settings: dict[str, Any] = {**TINY_GENERATE, "prompt": "a red cube", "prior": str(folder)}
    settings.pop("recipe")
    settings.update(render_size=16, steps=2, albedo_until=0.5, textureless_prob=0.5, render_milestone=[0.5, 24])
    cfg = GenerateConfig.from_dict(settings)
    assert cfg.recipe == "sd-sds" and cfg.render_size == 16
    generate(cfg, tmp_path, prior=prior, progress=False)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["recipe"] == "sd-sds" and saved["guidance_scale"] == 100.0 and saved["render_milestone"] == [0.5, 24]
    again = GenerateConfig.from_dict({**saved, "steps": 3})  # the saved config, one step more
    assert again.recipe == "sd-sds" and again.as_dict() == {**cfg.resolved(16).as_dict(), "steps": 3}
    (tmp_path / "metrics.json").unlink()  # a finished run trains on only without its metrics
    metrics = generate(again, tmp_path, prior=prior, progress=False)
    assert metrics["resumed_from_step"] == 2 and metrics["steps"] == 3


def test_milestone_and_shading_schedule(tiny_prior) -> None:
    from uni3d.tasks.text_to_3d.trainer import TextTo3D

    folder, prior = tiny_prior
    settings = {**TINY_GENERATE, "prompt": "a red cube", "prior": str(folder), "render_size": 16}
    cfg = GenerateConfig.from_dict(
        {**settings, "steps": 4, "render_milestone": [0.5, 24], "albedo_until": 0.25, "textureless_prob": 0.5}
    )
    trainer = TextTo3D(cfg.resolved(16), prior)
    torch.manual_seed(0)
    sides, shading = [], []
    for step in range(4):
        trainer.prepare(step)
        sides.append(trainer.size)
        shading.append(trainer.step_shading)
    assert sides == [16, 16, 24, 24] and shading[0] == "albedo"
    draw = trainer.draw(2, train_generator=True)
    assert draw.context.renders[0].rgb.shape[0] == 24 * 24  # the rays of the milestone's side
    modes = [trainer.shading_at(5) for _ in range(400)]
    assert set(modes) == {"textureless", None} and 0.4 < modes.count("textureless") / 400 < 0.6
    plain = TextTo3D(GenerateConfig.from_dict(settings).resolved(16), prior)
    assert plain.shading_at(0) is None  # no schedule: the run's shading, and no random draw


def test_generate_help_lists_the_recipes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--help"]) == 0
    out = "".join(capsys.readouterr().out.split())  # argparse wraps lines, even inside a name
    assert all(name in out for name in RECIPES)


def test_every_embedded_prior_takes_the_embedded_recipe(tiny_prior, tmp_path: Path) -> None:
    """A prior made by train-prior (it names its view scheme) or one in assets/priors gets the embedded recipe, not
    a Stable Diffusion one; a bare SD folder still gets its preset's."""
    import shutil

    from uni3d.models.views import ANGLES, save_view_scheme

    folder, _ = tiny_prior
    trained = tmp_path / "my-prior"
    shutil.copytree(folder, trained)
    save_view_scheme(trained, ANGLES)
    assert GenerateConfig.from_dict({"prompt": "a red cube", "prior": str(trained)}).recipe == "embedded"
    coarse = Path(__file__).resolve().parents[1] / "assets" / "priors" / "shapes-coarse"
    assert GenerateConfig.from_dict({"prompt": "a red cube", "prior": str(coarse)}).recipe == "embedded"
    assert GenerateConfig.from_dict({"prompt": "a red cube", "prior": str(folder)}).recipe == "sd-sds"


def test_the_latent_stage_renders_at_the_latent_side_without_the_encoder(
    tiny_prior, monkeypatch: pytest.MonkeyPatch
) -> None:
    from uni3d.tasks.text_to_3d.trainer import TextTo3D

    folder, prior = tiny_prior
    settings = {**TINY_GENERATE, "prompt": "a red cube", "prior": str(folder), "render_size": 16}
    cfg = GenerateConfig.from_dict({**settings, "steps": 4, "latent_until": 0.5})
    trainer = TextTo3D(cfg.resolved(16), prior)
    latent = int(prior.unet.config.sample_size)
    encodes: list[int] = []
    original = type(prior).encode
    monkeypatch.setattr(type(prior), "encode", lambda self, rgb: encodes.append(len(rgb)) or original(self, rgb))
    sides = []
    for step in range(4):
        x0 = trainer.draw(step, train_generator=True).x0
        sides.append(trainer.size)
        assert x0.shape[-1] == latent and x0.requires_grad  # latents either way, differentiable to the field
    assert sides == [latent, latent, 16, 16] and len(encodes) == 2  # the encoder only after the latent stage
    with pytest.raises(UsageError, match="latent_until"):
        GenerateConfig.from_dict({**settings, "latent_until": 1.5})


def test_a_run_with_a_latent_stage_finishes_and_reports_the_maps_fit(tiny_prior, tmp_path: Path) -> None:
    from uni3d.tasks.text_to_3d.run import generate

    folder, prior = tiny_prior
    settings = {**TINY_GENERATE, "prompt": "a red cube", "prior": str(folder), "steps": 2, "latent_until": 0.5}
    metrics = generate(GenerateConfig.from_dict(settings), tmp_path, prior=prior, progress=False)
    assert metrics["status"] == "done" and 0 <= metrics["latent_map_r2"] <= 1
    assert json.loads((tmp_path / "config.json").read_text())["latent_until"] == 0.5


def test_the_latent_map_is_the_least_squares_fit_of_the_encoder(tiny_prior) -> None:
    from torch.nn import functional as F

    from uni3d.models.latent_rgb import _fitting_images, fit_latent_map

    _, prior = tiny_prior
    fitted = fit_latent_map(prior)
    assert fit_latent_map(prior) is fitted  # fitted once per prior
    latent = int(prior.unet.config.sample_size)
    factor = 2 ** (len(prior.vae.config.block_out_channels) - 1)
    images = _fitting_images(latent * factor, seed=0)
    with torch.no_grad():
        target = prior.encode(images)
    colours = F.avg_pool2d(images, factor)
    residual = (target - fitted(colours)).double()
    # normal equations: the residual is orthogonal to every colour channel and to the constant
    for regressor in [*colours.double().unbind(1), torch.ones_like(colours[:, 0]).double()]:
        dots = torch.einsum("bchw,bhw->c", residual, regressor) / residual.numel()
        assert dots.abs().max() < 1e-5, dots
    assert 0 <= fitted.r2 <= 1


def test_a_lower_encode_side_encodes_fewer_pixels_and_gives_the_unets_latents(
    tiny_prior, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from uni3d.tasks.text_to_3d.run import generate
    from uni3d.tasks.text_to_3d.trainer import TextTo3D, prior_image_size

    folder, prior = tiny_prior
    full, latent = prior_image_size(prior), int(prior.unet.config.sample_size)
    factor = full // latent
    settings = {**TINY_GENERATE, "prompt": "a red cube", "prior": str(folder), "render_size": full}
    sides: list[int] = []
    original = type(prior).encode
    monkeypatch.setattr(type(prior), "encode", lambda self, rgb: sides.append(rgb.shape[-1]) or original(self, rgb))
    torch.manual_seed(0)
    default = TextTo3D(GenerateConfig.from_dict(settings).resolved(full), prior).draw(0, train_generator=True).x0
    torch.manual_seed(0)
    half = GenerateConfig.from_dict({**settings, "encode_size": full // 2}).resolved(full)
    x0 = TextTo3D(half, prior).draw(0, train_generator=True).x0
    assert sides == [full, full // 2]
    assert x0.shape == default.shape and x0.requires_grad  # the UNet's side, differentiable to the field
    assert not torch.allclose(x0, default)
    for bad in (full * 2, full // 2 + factor // 2 if factor > 1 else 0):
        if bad:
            with pytest.raises(UsageError, match="encode_size"):
                generate(GenerateConfig.from_dict({**settings, "encode_size": bad}), tmp_path / "bad", prior=prior)
    assert not (tmp_path / "bad").exists()  # refused before the run folder is made
    with pytest.raises(UsageError, match="encode_size 8-1024"):
        GenerateConfig.from_dict({**settings, "encode_size": 4})
