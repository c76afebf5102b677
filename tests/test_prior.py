"""The embedded prior's dataset and the Stable Diffusion prior interface, on a tiny random SD folder (offline)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from uni3d.diffusion.timesteps import TimestepRange
from uni3d.errors import UsageError
from uni3d.models.views import (
    ANGLES,
    COARSE,
    VIEW_NAMES,
    ViewScheme,
    apparent_distance,
    camera_angles,
    spell,
    split_view,
    view_index,
)
from uni3d.models.vocabulary import COLOUR_NAMES, SHAPE_NAMES
from uni3d.scene import orbit_cameras
from uni3d.scene.cameras import Cameras, look_at, spherical_to_position
from uni3d.tasks.embedded_prior import (
    CAPTION_KINDS,
    COLOURS,
    ShapesDatasetConfig,
    load_shapes_dataset,
    make_shapes_dataset,
    save_shapes_dataset,
    subject,
)
from uni3d.tasks.embedded_prior.primitives import SHAPES
from uni3d.tasks.embedded_prior.render import AMBIENT, render_primitive

SMALL = ShapesDatasetConfig(n=96, size=24, seed=3)
SHIPPED_PRIOR = Path(__file__).resolve().parents[1] / "assets" / "priors" / "shapes"


@pytest.fixture(scope="module")
def shapes():
    return make_shapes_dataset(SMALL)


# ---- dataset ---------------------------------------------------------------------------------------------------


def test_dataset_is_deterministic_by_seed(shapes) -> None:
    again = make_shapes_dataset(SMALL)
    other = make_shapes_dataset(ShapesDatasetConfig(n=SMALL.n, size=SMALL.size, seed=SMALL.seed + 1))
    for name in ("images", "alpha", "shape", "colour", "caption_kind", "view", "azimuth"):
        np.testing.assert_array_equal(getattr(shapes, name), getattr(again, name))
    assert shapes.captions == again.captions
    assert not np.array_equal(shapes.images, other.images)
    assert shapes.images.shape == (SMALL.n, SMALL.size, SMALL.size, 3) and shapes.images.dtype == np.uint8


def test_dataset_file_round_trip(shapes, tmp_path: Path) -> None:
    path = save_shapes_dataset(shapes, tmp_path / "shapes.npz")
    loaded = load_shapes_dataset(path)
    np.testing.assert_array_equal(loaded.images, shapes.images)
    np.testing.assert_array_equal(loaded.colour, shapes.colour)
    assert loaded.captions == shapes.captions and loaded.config == SMALL
    assert [p.name for p in tmp_path.iterdir()] == ["shapes.npz"]  # no temporary file left behind
    with pytest.raises(UsageError, match="make-shapes-dataset"):
        load_shapes_dataset(tmp_path / "missing.npz")


def test_caption_variants() -> None:
    assert COARSE.caption(subject("cube", "red", "full"), 10.0, 90.0, 3.0) == "a red cube, side view"
    assert COARSE.caption(subject("cube", "red", "shape"), 10.0, 0.0, 3.0) == "a cube, front view"
    assert COARSE.caption(subject("cube", "red", "colour"), 10.0, 180.0, 3.0) == "a red object, back view"
    assert COARSE.caption(subject("cone", "orange", "full"), 70.0, 0.0, 3.0) == "an orange cone, overhead view"
    with pytest.raises(UsageError):
        subject("cube", "red", "nothing")


def test_captions_agree_with_labels(shapes) -> None:
    assert len(SHAPE_NAMES) >= 6 and len(COLOUR_NAMES) >= 8
    assert set(shapes.caption_kind.tolist()) == set(range(len(CAPTION_KINDS)))
    for text, s, c, k, v in zip(
        shapes.captions, shapes.shape, shapes.colour, shapes.caption_kind, shapes.view, strict=True
    ):
        kind, words = CAPTION_KINDS[k], text.replace(",", "").split()
        assert (SHAPE_NAMES[s] in words) == (kind in ("full", "shape")), text
        assert (COLOUR_NAMES[c] in words) == (kind in ("full", "colour")), text
        assert text.endswith(f", {VIEW_NAMES[v]} view"), text
    # the stored angles give back the stored view labels
    np.testing.assert_array_equal(
        view_index(torch.from_numpy(shapes.elevation), torch.from_numpy(shapes.azimuth)).numpy(), shapes.view
    )


def test_angle_captions_name_each_camera_as_stored() -> None:
    """``--views angles``: the same images and labels as ``coarse`` (same seed), each caption the coarse one plus
    the stored camera's azimuth, elevation and apparent distance, rounded to the scheme's steps, one word each."""
    from uni3d.models.tokenizer import build_clip_tokenizer

    coarse = make_shapes_dataset(ShapesDatasetConfig(n=24, size=16, seed=5))
    angles = make_shapes_dataset(ShapesDatasetConfig(n=24, size=16, seed=5, views="angles"))
    np.testing.assert_array_equal(coarse.images, angles.images)
    reference = np.tan(np.radians(20.0))
    apparent = angles.distance * np.tan(np.radians(angles.fov) / 2) / reference
    spelt = {spell(n): n for n in range(-90, 1000)}
    tokenizer = build_clip_tokenizer()
    for short, long, el, az, far in zip(
        coarse.captions, angles.captions, angles.elevation, angles.azimuth, apparent, strict=True
    ):
        assert long.startswith(short + ", azimuth"), long
        words = long.split(", ")[-3:]
        assert all(len(tokenizer.tokenize(w)) == 1 for w in words), words
        a, e, d = (
            spelt[w.removeprefix(kind)] for w, kind in zip(words, ("azimuth", "elevation", "distance"), strict=True)
        )
        assert 0 <= a < 360 and a % 15 == 0 and e % 15 == 0 and d % 25 == 0
        assert abs((a - az + 180) % 360 - 180) <= 7.5 and abs(e - el) <= 7.5 and abs(d / 100 - far) <= 0.125 + 1e-6
    with pytest.raises(UsageError, match="view scheme"):
        ShapesDatasetConfig(views="compass")


def test_labels_agree_with_pixels(shapes) -> None:
    """Object pixels are the named albedo times a Lambertian factor in [k_a, 1]; the background is white."""
    palette = torch.tensor(list(COLOURS.values()))
    images = torch.from_numpy(shapes.images).float() / 255
    alpha = torch.from_numpy(shapes.alpha)
    assert (images[alpha == 0] == 1).all()
    for img, a, label in zip(images, alpha, shapes.colour.tolist(), strict=True):
        inside = img[a == 255]
        assert len(inside) >= 8  # the object is in view
        mean = inside.mean(0)
        scale = ((palette @ mean) / palette.pow(2).sum(-1)).clamp(AMBIENT, 1)  # best brightness per colour
        error = (scale[:, None] * palette - mean).norm(dim=-1)
        assert error.argmin().item() == label, (COLOUR_NAMES[label], mean)


def test_shapes_differ_in_silhouette() -> None:
    """One camera, every shape: pairwise different masks (the shape label is visible in the pixels)."""
    cam = orbit_cameras(1, elevation_deg=30.0, distance=3.0, size=24)
    masks = [render_primitive(f, torch.ones(1, 3) * 0.5, cam)[1][0] for f in SHAPES.values()]
    for i in range(len(masks)):
        for j in range(i):
            assert (masks[i] - masks[j]).abs().sum() > 5, (SHAPE_NAMES[i], SHAPE_NAMES[j])


def test_make_shapes_dataset_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from uni3d.cli.main import main

    out = tmp_path / "d.npz"
    assert main(["make-shapes-dataset", "--n", "8", "--size", "16", "--out", str(out)]) == 0
    assert len(load_shapes_dataset(out)) == 8 and "wrote" in capsys.readouterr().out
    assert main(["make-shapes-dataset", "--n", "0", "--out", str(out)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


# ---- views and timesteps -----------------------------------------------------------------------------------------


def test_view_suffix_by_azimuth_and_elevation() -> None:
    az = torch.tensor([0.0, 44.0, 46.0, 90.0, -90.0, 134.0, 136.0, 180.0, -170.0, 370.0, 0.0])
    el = torch.tensor([0.0] * 10 + [70.0])
    names = [VIEW_NAMES[i] for i in view_index(el, az).tolist()]
    assert names == ["front", "front", "side", "side", "side", "side", "back", "back", "back", "front", "overhead"]
    orbit = orbit_cameras(4, elevation_deg=15.0)
    elevation, azimuth = camera_angles(orbit)
    torch.testing.assert_close(elevation, torch.full((4,), 15.0))
    assert COARSE.prompts("a red cube", orbit) == [
        "a red cube, front view",
        "a red cube, side view",
        "a red cube, back view",
        "a red cube, side view",
    ]
    # a view the prompt already names is replaced per camera, never doubled; trailing punctuation goes
    assert COARSE.prompts("a red cube, FRONT view.", orbit[:2]) == COARSE.prompts("a red cube", orbit[:2])
    assert split_view("a blue cone - overhead view!") == ("a blue cone", "overhead")
    assert split_view("a side view of a cube") == ("a side view of a cube", None)  # not at the end: kept


def test_angle_words_name_the_camera() -> None:
    """``angles``: azimuth in [0, 360) and elevation rounded to 15 degrees, the apparent distance (the distance
    at a 40 degree field of view showing the object as large) to 0.25, each spelt as one word; a prompt's own view
    words are replaced."""
    orbit = orbit_cameras(4, elevation_deg=15.0, distance=3.0, fov_deg=40.0)
    angles = ", elevationfifteen, distancethreehundred"
    assert ANGLES.prompts("a red cube", orbit) == [
        f"a red cube, front view, azimuthzero{angles}",
        f"a red cube, side view, azimuthninety{angles}",
        f"a red cube, back view, azimuthonehundredeighty{angles}",
        f"a red cube, side view, azimuthtwohundredseventy{angles}",
    ]
    # twice as far with half the tangent of the half-angle: the same apparent size
    half = 2 * float(np.degrees(np.arctan(np.tan(np.radians(20)) / 2)))
    wide = orbit_cameras(1, elevation_deg=-8.0, distance=6.0, fov_deg=half)
    torch.testing.assert_close(apparent_distance(wide), torch.tensor([3.0]))
    assert ANGLES.prompts("a cube", wide) == [
        "a cube, front view, azimuthzero, elevationminusfifteen, distancethreehundred"
    ]
    assert ANGLES.caption("a cube", 7.4, -7.6, 2.874) == (
        "a cube, front view, azimuththreehundredfortyfive, elevationzero, distancetwohundredseventyfive"
    )
    assert ANGLES.caption("a cube", 80.0, 100.0, 3.2) == (
        "a cube, overhead view, azimuthonehundredfive, elevationseventyfive, distancethreehundredtwentyfive"
    )
    again = "a red cube, side view, azimuthninety, elevationminusfifteen, distancetwohundredseventyfive."
    assert split_view(again) == ("a red cube", "side")
    assert ANGLES.prompts(again, orbit[:1]) == ANGLES.prompts("a red cube", orbit[:1])
    wider = ViewScheme("angles", azimuth_step=45.0)
    assert wider.caption("a cube", 0.0, 30.0, 3.0).startswith("a cube, front view, azimuthfortyfive,")
    assert len(wider.vocabulary()) == 8 + 13 + 31 and COARSE.vocabulary() == []
    assert [spell(n) for n in (0, 13, 40, 105, 345, 1225, -60)] == [
        "zero",
        "thirteen",
        "forty",
        "onehundredfive",
        "threehundredfortyfive",
        "onethousandtwohundredtwentyfive",
        "minussixty",
    ]
    with pytest.raises(UsageError, match="view scheme"):
        ViewScheme("compass")


def test_timestep_range_anneals_the_upper_end() -> None:
    rng = TimestepRange(t_min=0.02, t_max_start=0.98, t_max_end=0.5, anneal_until=0.5)
    assert rng.bounds(0.0) == (0.02, 0.98)
    assert rng.bounds(0.25) == pytest.approx((0.02, 0.74))
    assert rng.bounds(0.5) == rng.bounds(1.0) == pytest.approx((0.02, 0.5))
    t = rng.sample(4000, 1.0, 1000, torch.Generator().manual_seed(0))
    assert t.min() >= 20 and t.max() <= 500 and t.max() >= 490
    with pytest.raises(UsageError):
        TimestepRange(t_min=0.6, t_max_end=0.5)


def test_descending_schedule_falls_with_progress_around_its_centre() -> None:
    rng = TimestepRange(t_min=0.02, t_max_start=0.98, schedule="descending", jitter=0.05)
    gen = torch.Generator().manual_seed(0)
    means = [rng.sample(2000, p, 1000, gen).float().mean().item() / 999 for p in (0.0, 0.2, 0.4, 0.6)]
    assert means == sorted(means, reverse=True)  # t falls as the run goes on
    assert means[2] == pytest.approx(rng.centre(0.4), abs=0.01)  # jittered symmetrically about the centre
    assert rng.centre(0.5) == pytest.approx(0.5) and rng.centre(1.0) == pytest.approx(0.02)  # over the whole run
    t = rng.sample(2000, 0.0, 1000, gen)
    assert t.max() <= 979 and t.min() >= 0.98 * 999 - 0.3 * 999  # clipped to t_max_start, within ~6 jitters
    assert rng.bounds(0.4) == pytest.approx((rng.centre(0.4) - 0.1, rng.centre(0.4) + 0.1))
    with pytest.raises(UsageError, match="schedule"):
        TimestepRange(schedule="ascending")


# ---- the Stable Diffusion prior on a tiny pipeline ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from uni3d.models.tiny_sd import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("prior") / "tiny-sd", seed=0, sample_size=16)


@pytest.fixture(scope="module")
def prior(tiny_folder: Path):
    from uni3d.models.stable_diffusion import StableDiffusionPrior

    return StableDiffusionPrior.from_pretrained(tiny_folder)


def _cameras(elevation: list[float], azimuth: list[float], distance: float = 3.0) -> Cameras:
    """Cameras at these angles (degrees) looking at the origin, 40 degree field of view."""
    n = len(elevation)
    eye = spherical_to_position(torch.tensor(elevation), torch.tensor(azimuth), torch.full((n,), distance))
    return Cameras(look_at(eye, torch.zeros_like(eye)), torch.full((n,), np.radians(40.0)), 32, 32)


def _noisy_latents(prior, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, sigma, t)``: VE latents of random images at integer timesteps."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        x0 = prior.encode(torch.rand(batch, 3, 32, 32, generator=gen))
    t = torch.tensor([700, 150, 30, 999][:batch])
    sigma = prior.sigma_at(t)
    return x0 + sigma.view(-1, 1, 1, 1) * torch.randn(x0.shape, generator=gen), sigma, t


def test_prompt_notes_name_unknown_words_and_a_truncated_view_suffix() -> None:
    from transformers import CLIPTokenizer

    from uni3d.models.prompt_check import APP_REMEDIES, prompt_notes
    from uni3d.models.tokenizer import build_clip_tokenizer

    tok = build_clip_tokenizer()
    assert prompt_notes(tok, "An orange CONE", "") == []
    (note,) = prompt_notes(tok, "a dragon made of glass cubes")
    assert "'dragon', 'made', 'glass', 'cubes';" in note and "--prior" in note  # 'of' is a relation word now
    (negative,) = prompt_notes(tok, "a red cube", "blurry red")
    assert "negative prompt word(s) 'blurry'," in negative
    other = build_clip_tokenizer(["a", "dragon", "made", "of", "glass"])  # not the caption tokenizer: no word notes
    assert prompt_notes(other, "a dragon made of glass") == []
    shipped = CLIPTokenizer.from_pretrained(SHIPPED_PRIOR, subfolder="tokenizer")  # an earlier caption vocabulary
    assert "'dragon'" in prompt_notes(shipped, "a dragon")[0]
    assert "'on', 'top', 'of';" in prompt_notes(shipped, "a red cube on top of a blue sphere")[0]  # no relations
    assert prompt_notes(tok, "a red box on top of a blue ball with a nose") == []
    words = ("a red cube " * 25).strip()  # 75 tokens + BOS/EOS fit in 77; ", overhead view" adds 3
    (cut,) = prompt_notes(tok, words)
    assert "is 80 tokens, over the prior's 77" in cut
    assert prompt_notes(tok, " ".join(words.split()[:-3])) == []
    (view,) = prompt_notes(tok, "a red cube, side view")
    assert "'side view'" in view and "view_dependent: false" in view
    (foreign,) = prompt_notes(tok, "a red cube 🚀 立方体 café", remedies=APP_REMEDIES)  # words of any script, emoji
    assert "'🚀', '立方体', 'café';" in foreign and "Prior menu" in foreign and "--prior" not in foreign
    assert prompt_notes(tok, "a red cube, side view", view_dependent=False) == []
    # the angles scheme's words are longer: ", overhead view, azimuthzero, elevationseventyfive, distance..." is 9
    assert prompt_notes(tok, " ".join(words.split()[:-9]), views=ANGLES) == []
    (cut,) = prompt_notes(tok, " ".join(words.split()[:-8]), views=ANGLES)
    assert "over the prior's 77" in cut


def test_tokenizer_is_local_and_word_level() -> None:
    from uni3d.models.tokenizer import build_clip_tokenizer

    tok = build_clip_tokenizer()
    tokens = tok.convert_ids_to_tokens(tok("a red cube, side view").input_ids)
    assert tokens == [
        "<|startoftext|>",
        "a</w>",
        "red</w>",
        "cube</w>",
        ",</w>",
        "side</w>",
        "view</w>",
        "<|endoftext|>",
    ]
    ids = tok("a hamburger").input_ids
    assert tok.unk_token_id not in ids[1:-1] and tok.decode(ids, skip_special_tokens=True) == "a hamburger"


def test_tiny_pipeline_round_trip(tiny_folder: Path, prior) -> None:
    index = json.loads((tiny_folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert prior.prediction == "eps" and prior.num_train_timesteps == 1000
    x, sigma, _ = _noisy_latents(prior)
    assert x.shape == (2, 4, 16, 16)
    cond, uncond = prior.view_conditions("a red cube", _cameras([10.0, 70.0], [90.0, 0.0]))
    assert cond.shape == (2, 77, 32) and set(prior._embeddings) >= {
        "a red cube, side view",
        "a red cube, overhead view",
    }
    x.requires_grad_(True)
    d = prior.denoise(x, sigma, cond, uncond, guidance_scale=7.5)
    assert d.shape == x.shape and d.dtype == torch.float32 and torch.isfinite(d).all()
    d.square().sum().backward()  # frozen parameters, live input (METHOD.md: the loss needs d D / d x)
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in prior.parameters())
    assert prior.decode(d.detach()).shape == (2, 3, 32, 32)


def test_the_folder_names_its_view_scheme(prior, tiny_folder: Path, tmp_path: Path) -> None:
    """A folder without ``uni3d_views.json`` (any SD) is prompted with DreamFusion's words; one that names
    ``angles`` (the embedded prior) with the camera's angles; an unreadable file is a one-line error."""
    from uni3d.models.stable_diffusion import StableDiffusionPrior
    from uni3d.models.views import VIEWS_FILE, load_view_scheme, save_view_scheme

    assert prior.views == COARSE
    folder = tmp_path / "tiny-angles"
    shutil.copytree(tiny_folder, folder)
    save_view_scheme(folder, ANGLES)
    angled = StableDiffusionPrior.from_pretrained(folder)
    assert angled.views == ANGLES
    angled.view_conditions("a red cube", _cameras([10.0], [90.0]))
    assert set(angled._embeddings) >= {"a red cube, side view, azimuthninety, elevationfifteen, distancethreehundred"}
    (folder / VIEWS_FILE).write_text('{"name": "angles", "azimuth_step": "x"')
    with pytest.raises(UsageError, match=VIEWS_FILE):
        load_view_scheme(folder)


def test_sigma_table_matches_the_scheduler(prior, tiny_folder: Path) -> None:
    from diffusers import DDPMScheduler

    ab = DDPMScheduler.from_pretrained(tiny_folder, subfolder="scheduler").alphas_cumprod.double()
    t = torch.tensor([0, 1, 250, 999])
    torch.testing.assert_close(prior.sigma_at(t).double(), ((1 - ab[t]) / ab[t]).sqrt(), rtol=1e-6, atol=0)
    torch.testing.assert_close(prior.timestep_at(prior.sigma_at(t)), t.float(), rtol=0, atol=1e-3)
    half = prior.sigma_at(torch.tensor([250.5]))
    assert prior.sigma_at(torch.tensor([250]))[0] < half[0] < prior.sigma_at(torch.tensor([251]))[0]


def test_denoiser_is_the_ddpm_x0_estimate(prior) -> None:
    """D from the definition x_vp = sqrt(ab) x0 + sqrt(1 - ab) eps, x_ve = x_vp / sqrt(ab), without units.py."""
    x, sigma, t = _noisy_latents(prior)
    cond = prior.embed(["a blue sphere, front view"] * 2)
    ab = 1 / (1 + sigma.double() ** 2)  # alpha_bar of the timestep with this sigma
    a, s = ab.sqrt().view(-1, 1, 1, 1), (1 - ab).sqrt().view(-1, 1, 1, 1)
    with torch.no_grad():
        eps = prior.unet((a * x).float(), t.float(), encoder_hidden_states=cond).sample.double()
        d = prior.denoise(x, sigma, cond)
    torch.testing.assert_close(d.double(), (a * x - s * eps) / a, rtol=1e-4, atol=1e-4)


class _EpsAsV(nn.Module):
    """An eps UNet re-expressed as a v UNet: ``v = sqrt(ab) eps - sqrt(1 - ab) x0`` (Salimans & Ho 2022)."""

    def __init__(self, unet: nn.Module, alphas_cumprod: torch.Tensor) -> None:
        super().__init__()
        self.inner, self.ab = unet, alphas_cumprod

    @property
    def dtype(self) -> torch.dtype:
        return self.inner.dtype

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor):
        eps = self.inner(sample, timestep, encoder_hidden_states=encoder_hidden_states).sample
        ab = self.ab[timestep.round().long()].view(-1, 1, 1, 1).float()
        x0 = (sample - (1 - ab).sqrt() * eps) / ab.sqrt()
        return SimpleNamespace(sample=ab.sqrt() * eps - (1 - ab).sqrt() * x0)


def test_eps_and_v_prediction_give_the_same_denoiser(prior, tiny_folder: Path, tmp_path: Path) -> None:
    from diffusers import DDPMScheduler

    from uni3d.models.stable_diffusion import StableDiffusionPrior

    v_folder = tmp_path / "tiny-v"
    shutil.copytree(tiny_folder, v_folder)
    cfg_path = v_folder / "scheduler" / "scheduler_config.json"
    cfg_path.write_text(json.dumps(json.loads(cfg_path.read_text()) | {"prediction_type": "v_prediction"}))
    v_prior = StableDiffusionPrior.from_pretrained(v_folder)
    assert v_prior.prediction == "v"
    ab = DDPMScheduler.from_pretrained(tiny_folder, subfolder="scheduler").alphas_cumprod
    v_prior.unet = _EpsAsV(v_prior.unet, ab)

    x, sigma, _ = _noisy_latents(prior, batch=4, seed=1)
    cond, uncond = prior.view_conditions("a green torus", _cameras([0.0] * 4, [0.0, 90.0, 180.0, 270.0]))
    with torch.no_grad():
        d_eps = prior.denoise(x, sigma, cond, uncond, guidance_scale=5.0)
        d_v = v_prior.denoise(x, sigma, cond, uncond, guidance_scale=5.0)
        torch.testing.assert_close(d_v, d_eps, rtol=1e-4, atol=1e-4)
        v_prior.prediction = "eps"  # reading the v output as eps must not pass the same check
        assert (v_prior.denoise(x, sigma, cond, uncond, guidance_scale=5.0) - d_eps).abs().max() > 1e-2


def test_cfg_scale_one_is_the_conditional_prediction(prior) -> None:
    x, sigma, _ = _noisy_latents(prior, seed=2)
    cond, uncond = prior.view_conditions("a red cube", _cameras([0.0] * 2, [0.0] * 2), negative_prompt="blurry")
    with torch.no_grad():
        d_cond = prior.denoise(x, sigma, cond)
        d_uncond = prior.denoise(x, sigma, uncond)
        torch.testing.assert_close(prior.denoise(x, sigma, cond, uncond, 1.0), d_cond, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(prior.denoise(x, sigma, cond, uncond, 0.0), d_uncond, rtol=1e-5, atol=1e-5)
        guided = prior.denoise(x, sigma, cond, uncond, 4.0)
    torch.testing.assert_close(guided, d_uncond + 4.0 * (d_cond - d_uncond), rtol=1e-4, atol=1e-4)
    assert (d_cond - d_uncond).abs().max() > 1e-4  # the prompts matter, so the checks above can fail


def test_dtype_and_memory_options(tiny_folder: Path, prior) -> None:
    from uni3d.models.stable_diffusion import PriorOptions, StableDiffusionPrior

    x, sigma, _ = _noisy_latents(prior, seed=3)
    cond = prior.embed(["a pink cone"] * 2)
    with torch.no_grad():
        ref = prior.denoise(x, sigma, cond)
        opts = PriorOptions(attention_slicing=True, channels_last=True, vae_slicing=True)
        sliced = StableDiffusionPrior.from_pretrained(tiny_folder, opts)
        torch.testing.assert_close(sliced.denoise(x, sigma, sliced.embed(["a pink cone"] * 2)), ref)
        assert sliced.vae.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        rgb = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(sliced.encode(rgb), prior.encode(rgb), atol=1e-5, rtol=1e-5)
        low = StableDiffusionPrior.from_pretrained(tiny_folder, PriorOptions(dtype="bf16"))
        assert low.unet.dtype == torch.bfloat16
        d = low.denoise(x, sigma, low.embed(["a pink cone"] * 2))
    assert d.dtype == torch.float32 and (d - ref).abs().mean() < 0.1 * ref.abs().mean()
    with pytest.raises(UsageError, match="unknown dtype"):
        PriorOptions(dtype="fp8")


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated")  # huggingface_hub
@pytest.mark.parametrize("source", ["/nonexistent/stable-diffusion", "uni3d-tests/no-such-model", "partial"])
def test_missing_prior_is_one_line(source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from uni3d.models.stable_diffusion import StableDiffusionPrior

    monkeypatch.chdir(tmp_path)
    (tmp_path / "partial" / "unet").mkdir(parents=True)
    with pytest.raises(UsageError) as err:
        StableDiffusionPrior.from_pretrained(source)
    message = str(err.value)
    assert "\n" not in message and "--allow-download" in message and "local folder" in message
