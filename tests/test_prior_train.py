"""Training, resuming, shipping and measuring the embedded prior (tiny runs on a 16 px dataset, CPU, offline)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from uni3d.cli.main import main
from uni3d.errors import UsageError
from uni3d.models.stable_diffusion import StableDiffusionPrior
from uni3d.scene import orbit_cameras
from uni3d.tasks.embedded_prior import ShapesDatasetConfig, make_shapes_dataset, save_shapes_dataset
from uni3d.tasks.embedded_prior import train as train_mod
from uni3d.tasks.embedded_prior.classifier import ClassifierConfig, load_classifier, save_classifier, train_classifier
from uni3d.tasks.embedded_prior.evaluate import EvalConfig, evaluate_prior
from uni3d.tasks.embedded_prior.train import PriorTrainConfig, train_prior

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "priors" / "shapes"
TINY = {
    "vae_steps": 6,
    "batch_size": 8,
    "vae_batch_size": 4,
    "log_every": 1,
    "checkpoint_every": 3,
    "sample_every": 1000,
    "sample_steps": 2,
    "warmup": 2,
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = make_shapes_dataset(ShapesDatasetConfig(n=48, size=16, seed=1, supersample=1))
    return save_shapes_dataset(data, tmp_path_factory.mktemp("prior-train") / "shapes16.npz")


def _losses(run: Path, phase: str) -> list[float]:
    with open(run / "metrics.csv", newline="") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh) if r["phase"] == phase]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    prior = StableDiffusionPrior.from_pretrained(folder)
    return {k: v.clone() for k, v in prior.state_dict().items()}


@pytest.fixture(scope="module")
def trained(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6 + 16 step run (the reference for the loss and resume tests)."""
    run = tmp_path_factory.mktemp("prior-run") / "run"
    train_prior(PriorTrainConfig(steps=16, **TINY), dataset, run, progress=False)
    return run


def test_training_lowers_both_losses(trained: Path) -> None:
    vae, diffusion = _losses(trained, "vae"), _losses(trained, "diffusion")
    assert len(vae) == 6 and len(diffusion) == 16
    assert vae[-1] < vae[0]
    assert sum(diffusion[-4:]) < sum(diffusion[:4])
    assert (trained / "samples" / "final.png").is_file()
    assert (trained / "samples" / "vae_reconstructions.png").is_file()


def test_interrupted_run_resumes_to_the_same_weights(
    dataset: Path, trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    calls = {"n": 0}
    real_step = train_mod._diffusion_step

    def interrupted(*args: object) -> float:
        calls["n"] += 1
        if calls["n"] == 8:  # after the checkpoint at global step 12, mid-way to the next one
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(train_mod, "_diffusion_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_prior(PriorTrainConfig(steps=16, **TINY), dataset, run, progress=False)
    monkeypatch.undo()
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 12
    result = train_prior(PriorTrainConfig(steps=16, **TINY), dataset, run, progress=False)
    assert _losses(run, "diffusion") == _losses(trained, "diffusion")
    assert result.vae_loss == _losses(trained, "vae")[-1]  # resumed past the VAE phase: its last logged loss
    resumed, reference = _weights(run / "pipeline"), _weights(trained / "pipeline")
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)


def test_changed_settings_refuse_to_resume(dataset: Path, trained: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="lr"):
        train_prior(PriorTrainConfig(steps=16, **{**TINY, "lr": 1e-4}), dataset, trained, progress=False)
    # a checkpoint written before a setting existed resumes at that setting's default, and only there
    old = tmp_path / "old"
    old.mkdir()
    payload = torch.load(trained / "checkpoint.pt", weights_only=True)
    del payload["config"]["snr_floor"]
    torch.save(payload, old / "checkpoint.pt")
    with pytest.raises(UsageError, match="snr_floor"):
        train_prior(PriorTrainConfig(steps=16, **{**TINY, "snr_floor": 1.0}), dataset, old, progress=False)
    assert train_prior(PriorTrainConfig(steps=16, **TINY), dataset, old, progress=False).pipeline.is_dir()


def test_fine_tuning_starts_from_a_saved_pipeline(dataset: Path, trained: Path, tmp_path: Path) -> None:
    """--init-from: no VAE phase, the VAE and its scaling factor kept, the UNet trained on from the loaded one."""
    cfg = PriorTrainConfig(steps=4, **{**TINY, "init_from": str(trained / "pipeline")})
    run = train_prior(cfg, dataset, tmp_path / "ft", progress=False).out
    assert _losses(run, "vae") == [] and len(_losses(run, "diffusion")) == 4
    before, after = _weights(trained / "pipeline"), _weights(run / "pipeline")
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("vae."))
    unet = [k for k in before if k.startswith("unet.")]
    assert any(not torch.equal(before[k], after[k]) for k in unet)
    saved = json.loads((run / "pipeline" / "vae" / "config.json").read_text())["scaling_factor"]
    assert saved == json.loads((trained / "pipeline" / "vae" / "config.json").read_text())["scaling_factor"]
    with pytest.raises(UsageError, match="model_index.json missing"):
        train_prior(PriorTrainConfig(steps=4, **{**TINY, "init_from": str(tmp_path)}), dataset, tmp_path / "x")
    with pytest.raises(UsageError, match="32x32 images, the dataset has 16x16"):
        train_prior(PriorTrainConfig(steps=4, **{**TINY, "init_from": str(SHIPPED)}), dataset, tmp_path / "y")


def test_fine_tuning_learns_a_new_view_scheme(tmp_path: Path) -> None:
    """A prior whose tokenizer predates the angle words is fine-tuned on an ``angles`` dataset: its vocabulary is
    extended (old ids and embedding rows kept), and the exported folder has the full tokenizer and names its
    view scheme, so ``StableDiffusionPrior`` prompts it with the angle words."""
    from uni3d.models.tiny_sd import extend_vocabulary, save_pipeline, tiny_pipeline
    from uni3d.models.tokenizer import PROMPT_WORDS, build_clip_tokenizer
    from uni3d.models.views import ANGLES, VIEWS_FILE

    old = build_clip_tokenizer(PROMPT_WORDS[: PROMPT_WORDS.index(ANGLES.vocabulary()[0])])  # the first prior's words
    pipe = tiny_pipeline(sample_size=8)
    pipe.text_encoder.resize_token_embeddings(len(old))
    pipe.register_modules(tokenizer=old)
    rows = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    extended = extend_vocabulary(pipe)
    assert extended.tokenizer.get_vocab() == build_clip_tokenizer().get_vocab()
    grown = extended.text_encoder.get_input_embeddings().weight.detach()
    assert grown.shape[0] == len(extended.tokenizer) > len(old) and torch.equal(grown[: len(old)], rows)
    # the new words start apart from each other, at the old words' scale (not all at their mean)
    scale = rows[[old.get_vocab()[w + "</w>"] for w in ("red", "cube", "side")]].norm(dim=1).median()
    new_rows = grown[len(old) :]
    assert torch.pdist(new_rows[:40]).min() > 0.3 * scale
    torch.testing.assert_close(new_rows.norm(dim=1).median(), scale, rtol=0.5, atol=0)
    unrelated = tiny_pipeline(sample_size=8)
    unrelated.register_modules(tokenizer=build_clip_tokenizer(["a", "dragon"]))
    assert extend_vocabulary(unrelated).tokenizer.get_vocab() == build_clip_tokenizer(["a", "dragon"]).get_vocab()

    pipe.text_encoder.resize_token_embeddings(len(old))
    pipe.register_modules(tokenizer=old)
    start = save_pipeline(pipe, tmp_path / "old")
    data = make_shapes_dataset(ShapesDatasetConfig(n=16, size=16, seed=2, supersample=1, views="angles"))
    angles = save_shapes_dataset(data, tmp_path / "angles.npz")
    cfg = PriorTrainConfig(steps=2, **{**TINY, "init_from": str(start)})
    run = train_prior(cfg, angles, tmp_path / "ft", progress=False).out
    assert json.loads((run / "pipeline" / VIEWS_FILE).read_text())["name"] == "angles"
    prior = StableDiffusionPrior.from_pretrained(run / "pipeline")
    assert prior.views == ANGLES and prior.tokenizer.get_vocab() == build_clip_tokenizer().get_vocab()
    assert train_mod.grid_prompts(ANGLES)[1] == (
        "a blue cube, side view, azimuthninety, elevationfifteen, distancethreehundred"
    )


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_snr_floor_weights_the_x0_error_at_least_so_much(prediction_type: str) -> None:
    """The loss weight times the squared-error factor of the target (``SNR`` for eps, ``SNR + 1`` for v) is the
    x0-space weight: Min-SNR's ``min(SNR, 5)`` by default, ``clamp(SNR, floor, 5)`` with a floor."""
    snr = torch.tensor([0.005, 0.3, 1.0, 2.0, 40.0])
    factor = snr if prediction_type == "epsilon" else snr + 1
    plain = PriorTrainConfig(prediction_type=prediction_type)
    floored = PriorTrainConfig(prediction_type=prediction_type, snr_floor=1.0)
    torch.testing.assert_close(train_mod.loss_weight(snr, plain) * factor, torch.tensor([0.005, 0.3, 1.0, 2.0, 5.0]))
    torch.testing.assert_close(train_mod.loss_weight(snr, floored) * factor, torch.tensor([1.0, 1.0, 1.0, 2.0, 5.0]))
    with pytest.raises(UsageError, match="--snr-floor"):
        PriorTrainConfig(snr_floor=6.0)


def test_exported_folder_is_a_stable_diffusion_prior(trained: Path) -> None:
    prior = StableDiffusionPrior.from_pretrained(trained / "pipeline")
    index = json.loads((trained / "pipeline" / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    rgb = torch.rand(2, 3, 16, 16)
    latents = prior.encode(rgb)
    assert latents.shape == (2, 4, 8, 8)
    cond, uncond = prior.embed(["a red cube, front view"] * 2), prior.embed([""] * 2)
    d = prior.denoise(latents + 0.5 * torch.randn_like(latents), torch.full((2,), 0.5), cond, uncond, 3.0)
    assert d.shape == latents.shape and torch.isfinite(d).all()
    assert prior.decode(d).shape == rgb.shape


def test_classifier_judges_the_prior(dataset: Path, trained: Path, tmp_path: Path) -> None:
    from uni3d.tasks.embedded_prior import load_shapes_dataset

    model, report = train_classifier(load_shapes_dataset(dataset), ClassifierConfig(steps=3, width=8), progress=False)
    path = save_classifier(model, report, tmp_path / "judge.pt")
    loaded, loaded_report = load_classifier(path)
    assert loaded_report == report and 0 <= report.shape_accuracy <= 1
    result = evaluate_prior(
        trained / "pipeline", path, tmp_path / "eval", EvalConfig(samples_per_prompt=1, steps=2, batch_size=60)
    )
    assert result.n_samples == 60 and 0 <= result.shape_accuracy <= 1 and 0 <= result.colour_accuracy <= 1
    assert (tmp_path / "eval" / "samples.png").is_file()
    saved = json.loads((tmp_path / "eval" / "prior_eval.json").read_text())
    assert saved["shape_accuracy"] == result.shape_accuracy and set(saved["per_shape"]) == {
        "sphere",
        "cube",
        "cylinder",
        "cone",
        "torus",
        "pyramid",
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset", "{tmp}/missing.npz"], "no shapes dataset"),
        (["--dataset", "{tmp}/corrupt.npz"], "not a readable"),
        (["--dataset", "{data}", "--steps", "0"], "--steps must be between"),
        (["--dataset", "{data}", "--steps", "2000000"], "--steps must be between"),
        (["--dataset", "{data}", "--vae-steps", "-1"], "--vae-steps must be between"),
        (["--dataset", "{data}", "--threads", "0"], "--threads"),
    ],
)
def test_bad_input_is_one_line(
    extra: list[str], message: str, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    args = [a.format(tmp=tmp_path, data=dataset) for a in extra]
    assert main(["train-prior", *args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_missing_classifier_is_one_line(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["eval-prior", "--prior", str(trained / "pipeline"), "--classifier", str(tmp_path / "nope.pt")]
    assert main([*args, "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no shape classifier" in err and "\n" not in err


def test_shipped_prior_loads_and_denoises() -> None:
    """The embedded prior in assets/ (required: the generate pipeline's default prior)."""
    prior = StableDiffusionPrior.from_pretrained(SHIPPED)
    assert prior.prediction == "eps"
    latents = prior.encode(torch.full((1, 3, 32, 32), 0.8))
    assert latents.shape == (1, 4, 16, 16)
    cond, uncond = prior.view_conditions("a red cube", orbit_cameras(1, elevation_deg=10.0))
    d = prior.denoise(latents + torch.randn_like(latents), torch.ones(1), cond, uncond, 3.0)
    assert torch.isfinite(d).all()


def test_prior_width_scales_the_text_encoder_and_the_unet() -> None:
    from uni3d.models.tiny_sd import tiny_pipeline

    pipe = tiny_pipeline(sample_size=8, width=48)
    assert pipe.text_encoder.config.hidden_size == pipe.unet.config.cross_attention_dim == 48
    assert tuple(pipe.unet.config.block_out_channels) == (48, 96)
    default = tiny_pipeline(sample_size=8)
    assert default.text_encoder.config.intermediate_size == 37 and default.unet.config.norm_num_groups == 32
    with pytest.raises(UsageError, match="multiple of 16"):
        PriorTrainConfig(width=20)


def test_shipped_composite_prior_reads_composite_prompts() -> None:
    """The composite prior in assets/ knows its words (no prompt notes), takes the embedded recipe, and denoises."""
    from uni3d.models.prompt_check import prompt_notes
    from uni3d.tasks.text_to_3d.config import GenerateConfig

    folder = SHIPPED.parent / "shapes-composite"
    prior = StableDiffusionPrior.from_pretrained(folder)
    for prompt in ("a red cube on top of a blue sphere", "a blue ball with a red nose", "a box that is red"):
        assert prompt_notes(prior.tokenizer, prompt) == [], prompt
    assert GenerateConfig.from_dict({"prompt": "x", "prior": str(folder)}).recipe == "embedded"
    latents = prior.encode(torch.full((1, 3, 32, 32), 0.8))
    cond, uncond = prior.view_conditions("a green cone beside a yellow torus", orbit_cameras(1, elevation_deg=10.0))
    assert torch.isfinite(prior.denoise(latents + torch.randn_like(latents), torch.ones(1), cond, uncond, 3.0)).all()
