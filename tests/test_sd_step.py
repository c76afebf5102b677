"""``uni3d bench sd-step`` and the SD-shaped random architectures it builds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from uni3d.bench.sd_step import STAGE_COLUMNS, run
from uni3d.cli.main import main
from uni3d.errors import UsageError
from uni3d.models.sd_architectures import random_sd_modules
from uni3d.models.stable_diffusion import PriorOptions


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("name", "unet", "text_encoder", "prediction"),
    [("sd15", 859_520_964, 123_060_480, "epsilon"), ("sd21", 865_910_724, 340_387_840, "v_prediction")],
)
def test_architectures_have_the_released_models_parameter_counts(
    name: str, unet: int, text_encoder: int, prediction: str
) -> None:
    # the released checkpoints' counts (UNet, CLIP text tower; the VAE is shared): a wrong width, head layout or
    # block type in the restated configs changes them. Built on the meta device: no memory, no time.
    with torch.device("meta"):
        vae, encoder, tokenizer, net, scheduler = random_sd_modules(name)
    assert (_count(net), _count(encoder), _count(vae)) == (unet, text_encoder, 83_653_863)
    assert scheduler.config.prediction_type == prediction
    assert max(tokenizer.get_vocab().values()) < encoder.config.vocab_size


def test_sd_step_bench_writes_a_row_per_preset_and_the_docs_section(tmp_path: Path) -> None:
    args = "bench sd-step --models tiny --presets sds,vsd --device cpu --steps 2 --warmup 1 --docs".split()
    rc = main([*args, str(tmp_path)])
    assert rc == 0
    rows = json.loads((tmp_path / "benchmarks" / "sd_step.json").read_text())["rows"]
    assert [(r["model"], r["preset"]) for r in rows] == [("tiny", "sds"), ("tiny", "vsd")]
    for r in rows:
        assert r["step_s"] > 0 and r["bare_s"] > 0 and r["peak_gib"] > 0 and r["rollbacks"] == 0
        assert r["overhead"] == pytest.approx(r["step_s"] / r["bare_s"])
        assert (r["dtype"], r["latent"], r["image"]) == ("float32", 16, 32)
    text = (tmp_path / "benchmarks.md").read_text()
    assert "<!-- sd-step:begin -->" in text and "| tiny | `vsd` | float32 | - |" in text


def test_the_profiled_step_is_broken_down_by_stage(tmp_path: Path) -> None:
    args = "bench sd-step --models tiny --presets uni-jeffreys --device cpu --steps 1 --warmup 1 --profile --docs"
    assert main([*args.split(), str(tmp_path)]) == 0
    (row,) = json.loads((tmp_path / "benchmarks" / "sd_step.json").read_text())["rows"]
    stages = row["stages_s"]
    assert list(stages) == [*STAGE_COLUMNS, "other"]
    # every stage of a uni-* step ran (it has a fake score and a ratio head), and the named stages cover most
    # of the step: what is left (cameras, embeddings, loss arithmetic) is the smaller part
    assert all(seconds > 0 for name, seconds in stages.items() if name != "other"), stages
    assert stages["other"] < sum(stages.values()) / 2, stages
    text = (tmp_path / "benchmarks.md").read_text()
    assert "Where one step goes" in text and "| tiny | `uni-jeffreys` |" in text


def test_sd_step_runs_a_bf16_prior_with_fp32_adapters_without_rollbacks() -> None:
    # the half-precision path of real SD (UNet in bf16, LoRA adapters and camera embedding in fp32)
    (row,) = run(["tiny"], ["uni-jeffreys"], PriorOptions("bf16", vae_slicing=True), steps=2, warmup=0)
    assert (row["dtype"], row["memory"], row["rollbacks"]) == ("bfloat16", "vae slicing", 0)


@pytest.mark.parametrize(
    ("models", "presets", "message"), [(["sd3"], ["sds"], "unknown model 'sd3'"), (["tiny"], ["sdss"], "sdss")]
)
def test_sd_step_rejects_unknown_names_before_building_anything(models: list[str], presets: list[str], message: str):
    with pytest.raises(UsageError, match=message):
        run(models, presets, PriorOptions(), steps=1, warmup=0)


def test_a_latent_stage_row_joins_the_earlier_rows(tmp_path: Path) -> None:
    base = f"bench sd-step --models tiny --presets sds --device cpu --steps 1 --warmup 0 --docs {tmp_path}".split()
    assert main(base) == 0
    assert main([*base, "--latent-stage", "--profile"]) == 0
    assert main(base) == 0  # measured again: replaces its own row, keeps the latent one
    saved = json.loads((tmp_path / "benchmarks" / "sd_step.json").read_text())
    assert [(r["stage"], r["render"]) for r in saved["rows"]] == [("latent", 16), ("rgb", 32)]
    latent_row = saved["rows"][0]
    assert latent_row["command"].endswith("--profile --latent-stage") and latent_row["rollbacks"] == 0
    assert latent_row["stages_s"]["VAE encode"] == 0 and latent_row["stages_s"]["teacher UNet"] > 0  # no encoder
    text = (tmp_path / "benchmarks.md").read_text()
    assert "| tiny | `sds` | float32 | - | latent | 16² (32 px; render 16) |" in text
    assert "- Earlier rows, kept: `uni3d bench sd-step --models tiny --presets sds" in text
    assert all(r["machine"]["cpu"] for r in saved["rows"])  # each row says where it ran


def test_a_lower_encode_side_is_its_own_row(tmp_path: Path) -> None:
    base = f"bench sd-step --models tiny --presets sds --device cpu --steps 1 --warmup 0 --docs {tmp_path}".split()
    assert main(base) == 0
    assert main([*base, "--encode-size", "16"]) == 0
    saved = json.loads((tmp_path / "benchmarks" / "sd_step.json").read_text())
    assert [r["encode"] for r in saved["rows"]] == [32, 16]  # both kept: another encode side is another row
    assert saved["rows"][1]["command"].endswith("--encode-size 16")
    text = (tmp_path / "benchmarks.md").read_text()
    assert "| rgb | 16² (32 px; render 32, encode 16) |" in text and "| rgb | 16² (32 px; render 32) |" in text
