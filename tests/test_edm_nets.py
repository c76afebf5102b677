"""EDM's SongUNet / DhariwalUNet in uni3d: EDM's parameter names, tiny EDM-format pickles as teachers,
the EDM / VP / VE preconditioning formulas, a 2-step distillation with a SongUNet teacher."""

from __future__ import annotations

import math
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from edm_snapshots import iddpm_table, write_snapshot

from uni3d.diffusion.edm import iddpm_preconditioning, iddpm_sigmas, ve_preconditioning, vp_preconditioning
from uni3d.errors import UsageError
from uni3d.models.edm.networks import DhariwalUNet, SongUNet
from uni3d.tasks.images.data import load_dataset
from uni3d.tasks.images.distill_config import DistillConfig
from uni3d.tasks.images.distill_run import load_teacher, run_distill
from uni3d.tasks.images.files import denoiser_from_record, denoiser_record, load_denoiser, load_torch

TINY_SONG: dict[str, Any] = dict(
    img_resolution=32, in_channels=1, out_channels=1, label_dim=10, augment_dim=9, model_channels=16,
    channel_mult=[1, 2], num_blocks=1, attn_resolutions=[16], dropout=0.0,
)  # fmt: skip
TINY_ADM: dict[str, Any] = dict(
    img_resolution=32, in_channels=1, out_channels=1, label_dim=10, model_channels=32, channel_mult=[1, 2],
    num_blocks=1, attn_resolutions=[16], dropout=0.0,
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


def test_songunet_has_edm_module_names_and_shapes() -> None:
    """Names as in EDM's ``training/networks.py`` (DDPM++ tiny: 2 levels, 1 block, attention at 16x16)."""
    torch.manual_seed(0)
    net = SongUNet(**TINY_SONG)
    assert list(net.enc) == ["32x32_conv", "32x32_block0", "16x16_down", "16x16_block0"]
    assert list(net.dec) == [
        "16x16_in0", "16x16_in1", "16x16_block0", "16x16_block1", "32x32_up", "32x32_block0", "32x32_block1",
        "32x32_aux_norm", "32x32_aux_conv",
    ]  # fmt: skip
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["map_label.weight"] == (16, 10) and shapes["map_augment.weight"] == (16, 9)
    assert "map_augment.bias" not in shapes and not any(k.startswith("map_noise") for k in shapes)
    assert shapes["map_layer0.weight"] == (64, 16) and shapes["map_layer1.weight"] == (64, 64)
    assert shapes["enc.16x16_down.conv0.resample_filter"] == (1, 1, 2, 2)
    assert shapes["enc.16x16_down.skip.weight"] == (16, 16, 1, 1)  # resample_proj: a 1x1 projection
    assert shapes["enc.16x16_block0.qkv.weight"] == (96, 32, 1, 1) and "enc.32x32_block0.qkv.weight" not in shapes
    assert shapes["dec.16x16_in0.qkv.weight"] == (96, 32, 1, 1) and "dec.16x16_in1.qkv.weight" not in shapes
    assert shapes["dec.16x16_block1.proj.weight"] == (32, 32, 1, 1) and "dec.16x16_block0.proj.weight" not in shapes
    assert shapes["dec.16x16_block0.conv0.weight"] == (32, 64, 3, 3)  # 32 + the encoder skip's 32
    assert shapes["dec.32x32_up.conv0.resample_filter"] == (1, 1, 2, 2)
    assert shapes["dec.32x32_block0.norm0.weight"] == (48,) and shapes["dec.32x32_aux_conv.weight"] == (1, 16, 3, 3)
    assert net.dec["32x32_block0"].norm0.num_groups == 12 and net.dec["32x32_aux_norm"].eps == 1e-6
    x, c_noise, labels = torch.randn(2, 1, 32, 32), torch.randn(2), torch.tensor([3, 7])
    out, bottleneck = net(x, c_noise, labels)
    assert out.shape == x.shape and bottleneck.shape == (2, 32, 16, 16)
    assert torch.equal(bottleneck, net.encode(x, net.embedding(c_noise, labels))[0])
    assert net.cfg.channels == (16, 32) and net.cfg.num_classes == 10


def test_ncsnpp_and_skip_variants_and_adm() -> None:
    ncsn = SongUNet(
        **{**TINY_SONG, "embedding_type": "fourier", "channel_mult_noise": 2, "encoder_type": "residual"},
        decoder_type="skip",
        resample_filter=[1, 3, 3, 1],
    )
    shapes = {k: tuple(v.shape) for k, v in ncsn.state_dict().items()}
    assert shapes["map_noise.freqs"] == (16,) and shapes["map_layer0.weight"] == (64, 32)
    assert shapes["enc.16x16_aux_residual.weight"] == (16, 1, 3, 3)
    assert shapes["enc.16x16_aux_residual.resample_filter"] == (1, 1, 4, 4)
    assert shapes["dec.16x16_aux_conv.weight"] == (1, 32, 3, 3) and "dec.32x32_aux_up.resample_filter" in shapes
    assert "dec.32x32_aux_up.weight" not in shapes
    skip = SongUNet(**TINY_SONG, encoder_type="skip")
    assert {"enc.16x16_aux_down.resample_filter", "enc.16x16_aux_skip.weight"} <= set(skip.state_dict())
    adm = DhariwalUNet(**TINY_ADM)
    shapes = {k: tuple(v.shape) for k, v in adm.state_dict().items()}
    assert shapes["map_label.weight"] == (128, 10) and "map_label.bias" not in shapes
    assert shapes["enc.16x16_down.affine.weight"] == (64, 128)  # adaptive scale and shift
    assert "enc.16x16_down.skip.resample_filter" in shapes and "enc.16x16_down.skip.weight" not in shapes
    assert shapes["dec.16x16_block0.qkv.weight"] == (192, 64, 1, 1) and shapes["out_conv.weight"] == (1, 32, 3, 3)
    x, c_noise, labels = torch.randn(2, 1, 32, 32), torch.randn(2), torch.tensor([1, 2])
    for net in (ncsn, skip, adm):
        out, bottleneck = net(x, c_noise, labels)
        assert out.shape == x.shape and bottleneck.shape[1:] == (net.cfg.channels[-1], 16, 16)
    with pytest.raises(ValueError, match="encoder_type"):
        SongUNet(**TINY_SONG, encoder_type="fancy")


@pytest.mark.parametrize("arch", ["SongUNet", "DhariwalUNet"])
def test_edm_pickle_loads_with_strict_state_dict(persistence: types.FunctionType, tmp_path: Path, arch: str) -> None:
    torch.manual_seed(0)
    net = SongUNet(**TINY_SONG) if arch == "SongUNet" else DhariwalUNet(**TINY_ADM)
    data = load_dataset("mnist", "train")
    for inner in (True, False):
        path = write_snapshot(tmp_path / f"{arch}-{inner}.pkl", persistence, net, sigma_data=0.5, inner=inner)
        teacher = load_teacher(str(path), data)
        assert type(teacher.net) is type(net) and not teacher.training
        loaded = teacher.net.state_dict()
        assert set(loaded) == set(net.state_dict())
        assert all(torch.equal(loaded[k], v) for k, v in net.state_dict().items())
        assert teacher.net.cfg.kwargs["channel_mult"] == [1, 2]


def _explicit_denoiser(net: torch.nn.Module, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor, kind: str):
    """EDM's ``*Precond.forward`` written out: coefficients of EDM Table 1 / ``training/networks.py``."""
    s = sigma.reshape(-1, 1, 1, 1)
    if kind == "EDMPrecond":
        sd = 0.5
        c_skip, c_out, c_in = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt(), 1 / (sd**2 + s**2).sqrt()
        c_noise = s.log() / 4
    elif kind == "VPPrecond":
        beta_d, beta_min, m = 19.9, 0.1, 1000
        c_skip, c_out, c_in = torch.ones_like(s), -s, 1 / (s**2 + 1).sqrt()
        c_noise = (m - 1) * ((beta_min**2 + 2 * beta_d * (1 + s**2).log()).sqrt() - beta_min) / beta_d
    elif kind == "iDDPMPrecond":
        index = torch.cdist(s.reshape(1, -1, 1), iddpm_table().reshape(1, -1, 1)).argmin(2)
        c_skip, c_out, c_in, c_noise = torch.ones_like(s), -s, 1 / (s**2 + 1).sqrt(), 1000 - 1 - index.float()
    else:
        c_skip, c_out, c_in, c_noise = torch.ones_like(s), s, torch.ones_like(s), (0.5 * s).log()
    with torch.no_grad():
        return c_skip * x + c_out * net(c_in * x, c_noise.flatten(), labels)[0][:, : x.shape[1]]


@pytest.mark.parametrize("kind", ["EDMPrecond", "VPPrecond", "VEPrecond", "iDDPMPrecond"])
def test_preconditioning_matches_edm_formulas(persistence: types.FunctionType, tmp_path: Path, kind: str) -> None:
    torch.manual_seed(1)
    if kind == "iDDPMPrecond":  # ADM with a variance output: 2 x the image channels
        net: torch.nn.Module = DhariwalUNet(**{**TINY_ADM, "out_channels": 2}).eval()
        torch.nn.init.normal_(net.out_conv.weight, std=0.05)  # a non-trivial F (zero-initialised)
    else:
        net = SongUNet(**TINY_SONG).eval()
        for p in (net.dec["32x32_aux_conv"].weight, net.dec["16x16_block1"].proj.weight):
            torch.nn.init.normal_(p, std=0.05)  # a non-trivial F
    extra: dict[str, object] = {"sigma_data": 0.5}
    if kind == "VPPrecond":
        extra = {"beta_d": 19.9, "beta_min": 0.1, "M": 1000}
    elif kind == "VEPrecond":
        extra = {"sigma_min": 0.02, "sigma_max": 100}
    elif kind == "iDDPMPrecond":
        extra = {"C_1": 0.001, "C_2": 0.008, "M": 1000, "inner": False}  # out_channels derived: 2 x img_channels
    path = write_snapshot(tmp_path / "net.pkl", persistence, net, precond=kind, **extra)
    teacher = load_teacher(str(path), load_dataset("mnist", "train"))
    x, sigma, labels = torch.randn(3, 1, 32, 32), torch.tensor([0.01, 1.0, 50.0]), torch.tensor([0, 4, 9])
    expected = _explicit_denoiser(net, x, sigma, labels, kind)
    with torch.no_grad():
        got, feats = teacher.with_features(x, sigma, labels)
        assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
        assert torch.allclose(feats, teacher.bottleneck(x, sigma, labels))
    copy = denoiser_from_record(denoiser_record(teacher), "memory")  # generator.pt keeps net and precond
    assert copy.precond == teacher.precond and type(copy.net) is type(net)
    with torch.no_grad():
        assert torch.equal(copy(x, sigma, labels), got)
    if kind == "EDMPrecond":  # c_noise = ln(sigma) / 4 reaches the network: F differs between noise levels
        assert not torch.allclose(got[0] - 0.5**2 / (0.01**2 + 0.25) * x[0], torch.zeros_like(x[0]), atol=1e-6)


def test_edm_pickle_errors_are_one_line(persistence: types.FunctionType, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = SongUNet(**TINY_SONG)
    data = load_dataset("mnist", "train")
    cases = [
        (write_snapshot(tmp_path / "own.pkl", persistence, net, inner=False, model_type="MyUNet"), "MyUNet"),
        (write_snapshot(tmp_path / "u.pkl", persistence, net, precond="iDDPMPrecond", u=torch.ones(1001)), "table u"),
        (write_snapshot(tmp_path / "wide.pkl", persistence, net, inner=False, model_channels=32), "do not match"),
    ]
    cifar = SongUNet(**{**TINY_SONG, "in_channels": 3, "out_channels": 3})
    cases.append((write_snapshot(tmp_path / "cifar.pkl", persistence, cifar), "dataset mismatch"))
    for path, needle in cases:
        with pytest.raises(UsageError, match=needle) as err:
            load_teacher(str(path), data)
        assert "\n" not in str(err.value)


def test_two_step_distill_with_a_songunet_teacher(persistence: types.FunctionType, tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = write_snapshot(tmp_path / "network-snapshot-000000.pkl", persistence, SongUNet(**TINY_SONG))
    cfg = DistillConfig(
        teacher=str(path), preset="uni-fkl", features="none", steps=2, batch_size=4, checkpoint_every=1,
        sample_every=2, eval_every=2, eval_samples=4, ratio_width=8,
    )  # fmt: skip
    row = run_distill(cfg, tmp_path / "run", progress=False)
    assert row["step"] == 2 and math.isfinite(row["loss_generator"]) and math.isfinite(row["loss_fake"])
    assert row["skipped_generator_steps"] == 0
    generator = load_denoiser(tmp_path / "run" / "generator.pt")
    assert isinstance(generator.net, SongUNet) and generator.net.cfg.kwargs["model_channels"] == 16
    state = load_torch(tmp_path / "run" / "checkpoint.pt")
    assert state["step"] == 2 and any("enc.16x16_block0.qkv.weight" in k for k in state["fake"])
    row = run_distill(replace(cfg, steps=3), tmp_path / "run", progress=False)  # resumes from the checkpoint
    assert row["step"] == 3


def test_vp_noise_label_inverts_the_vp_schedule() -> None:
    """``c_noise / (M - 1)`` is VPPrecond's ``t`` with ``sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)``."""
    t = torch.tensor([1e-3, 0.1, 0.5, 1.0], dtype=torch.float64)
    sigma = ((0.5 * 19.9 * t**2 + 0.1 * t).exp() - 1).sqrt()
    pre = vp_preconditioning(sigma)
    assert torch.allclose(pre.c_noise / 999, t, rtol=1e-9)
    assert torch.equal(pre.c_out, -sigma) and torch.allclose(pre.c_in, (1 + sigma**2).rsqrt())
    ve = ve_preconditioning(sigma)
    assert torch.allclose(ve.c_noise, (sigma / 2).log()) and torch.equal(ve.c_out, sigma)


def test_iddpm_levels_and_noise_labels() -> None:
    u = iddpm_sigmas()
    assert u.shape == (1001,) and u[-1] == 0 and bool((u[:-1] > u[1:]).all()) and 20000 < float(u[0]) < 21000
    pre = iddpm_preconditioning(u[[0, 500, 999]] * 1.0001)  # near a level: rounded to it
    assert pre.c_noise.tolist() == [999.0, 499.0, 0.0]
