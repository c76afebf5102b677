"""Image distiller on CPU with tiny networks: data, UNet/EDM, teacher, FID, distill, resume, errors, EDM pickles, DDP."""

from __future__ import annotations

import csv
import json
import os
import pickle
import subprocess
import sys
import types
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from edm_snapshots import Persistent

from uni3d.bench.image_runs import summarize
from uni3d.bench.images import verdict
from uni3d.cli.main import main
from uni3d.diffusion.edm import preconditioning
from uni3d.errors import UsageError
from uni3d.models.edm.denoiser import EDMDenoiser
from uni3d.models.edm.pickle_reader import read_edm_network
from uni3d.models.edm.unet import UNet, UNetConfig
from uni3d.tasks.images.data import load_dataset, split_indices
from uni3d.tasks.images.distill import ImageDistiller
from uni3d.tasks.images.distill_config import DistillConfig
from uni3d.tasks.images.distill_run import load_teacher, run_distill
from uni3d.tasks.images.features import FeatureNet, save_feature_net
from uni3d.tasks.images.fid import FeatureStats, features_and_probs, frechet_distance, score_samples
from uni3d.tasks.images.files import check_resumable, denoiser_record, load_denoiser, load_torch, save_torch
from uni3d.tasks.images.teacher import TeacherConfig, TeacherRun, lr_factor, train_teacher

TINY = UNetConfig(channels=(8, 16), emb_dim=16, num_classes=10)
REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_teacher_config(**changes: object) -> TeacherConfig:
    base = TeacherConfig(
        unet=TINY, batch_size=8, steps=4, warmup_steps=1, checkpoint_every=2, sample_every=100, sample_nfe=1
    )
    return replace(base, **changes)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny class-conditional teacher (a few training steps) and a tiny random feature net, as files."""
    root = tmp_path_factory.mktemp("images")
    torch.manual_seed(0)
    run = TeacherRun(tiny_teacher_config())
    for _ in range(3):
        run.step()
    teacher = save_torch(root / "teacher.pt", denoiser_record(run.ema))
    features = save_feature_net(root / "features.pt", FeatureNet(width=4), {"note": "untrained, for tests"})
    return {"teacher": teacher, "features": features, "root": root}


def distill_config(files: dict[str, Path], **changes: object) -> DistillConfig:
    base = DistillConfig(
        teacher=str(files["teacher"]),
        features=str(files["features"]),
        steps=4,
        batch_size=4,
        eval_samples=20,
        eval_every=4,
        checkpoint_every=2,
        sample_every=4,
        ratio_width=8,
    )
    return replace(base, **changes)


def test_split_is_fixed_stratified_and_disjoint() -> None:
    train, held = load_dataset("mnist", "train"), load_dataset("mnist", "heldout")
    assert (len(train), len(held)) == (4000, 1000)
    assert train.images.shape[1:] == (1, 32, 32) and train.images.min() >= -1 and train.images.max() <= 1
    assert torch.bincount(train.labels).tolist() == [400] * 10 and torch.bincount(held.labels).tolist() == [100] * 10
    idx = split_indices(load_dataset("mnist", "all").labels)
    assert set(idx["train"].tolist()).isdisjoint(idx["heldout"].tolist())
    assert len(set(idx["train"].tolist()) | set(idx["heldout"].tolist())) == 5000
    assert torch.equal(load_dataset("mnist", "train").images, train.images)


def test_unet_shapes_and_edm_preconditioning() -> None:
    torch.manual_seed(0)
    net = UNet(TINY)
    x, c_noise, labels = torch.randn(3, 1, 32, 32), torch.randn(3), torch.tensor([0, 5, 9])
    out, bottleneck = net(x, c_noise, labels)
    assert out.shape == x.shape and bottleneck.shape == (3, 16, 16, 16)
    assert torch.count_nonzero(out) == 0  # zero-initialised output layer: F = 0, so D = c_skip x at init
    with pytest.raises(ValueError, match="class-conditional"):
        net(x, c_noise)
    torch.nn.init.normal_(net.out.weight, std=0.1)
    model = EDMDenoiser(net, sigma_data=0.5)
    sigma = torch.tensor([0.01, 1.0, 50.0])
    pre = preconditioning(sigma, 0.5)
    col = [c.reshape(-1, 1, 1, 1) for c in (pre.c_skip, pre.c_out, pre.c_in)]
    expected = col[0] * x + col[1] * net(col[2] * x, pre.c_noise, labels)[0]
    assert torch.allclose(model(x, sigma, labels), expected, atol=1e-6)
    d, feats = model.with_features(x, sigma, labels)
    assert torch.allclose(d, expected, atol=1e-6) and torch.allclose(feats, model.bottleneck(x, sigma, labels))


def test_teacher_loss_decreases() -> None:
    run = TeacherRun(tiny_teacher_config(batch_size=16, lr=3e-3))
    for _ in range(40):
        run.step()
    losses = run._losses
    assert run.nonfinite_steps == 0
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])


def test_teacher_resume_is_bit_for_bit_and_scores_leave_training_alone(files: dict[str, Path], tmp_path: Path) -> None:
    cfg = tiny_teacher_config(eval_every=0)
    train_teacher(cfg, tmp_path / "straight", progress=False)
    scored = replace(cfg, steps=2, eval_every=2, eval_samples=20, eval_nfe=1, features=str(files["features"]))
    train_teacher(scored, tmp_path / "resumed", progress=False)
    train_teacher(replace(scored, steps=4), tmp_path / "resumed", resume=True, progress=False)
    rows = list(csv.DictReader((tmp_path / "resumed" / "metrics.csv").open()))
    assert [r["step"] for r in rows if r["fid"]] == ["2", "4"] and float(rows[-1]["accuracy_nfe1"]) >= 0
    assert (tmp_path / "resumed" / "curves.png").exists() and not (tmp_path / "straight" / "curves.png").exists()
    a, b = load_torch(tmp_path / "straight" / "teacher.pt"), load_torch(tmp_path / "resumed" / "teacher.pt")
    assert a["step"] == b["step"] == 4
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert isinstance(load_denoiser(tmp_path / "straight" / "teacher.pt"), EDMDenoiser)


def test_teacher_lr_warms_up_then_decays_to_zero_and_the_decay_can_be_added_on_resume(tmp_path: Path) -> None:
    cfg = tiny_teacher_config(warmup_steps=4, decay_start=10, decay_steps=5)
    assert [lr_factor(cfg, s) for s in (1, 4, 10, 12, 15, 20)] == pytest.approx([0.25, 1, 1, 0.6, 0, 0])
    assert lr_factor(replace(cfg, decay_steps=0), 20) == 1
    with pytest.raises(UsageError, match="decay"):
        tiny_teacher_config(decay_steps=-1)
    constant = tiny_teacher_config(eval_every=0, steps=2)
    train_teacher(constant, tmp_path, progress=False)
    run = train_teacher(replace(constant, steps=4, decay_start=2, decay_steps=2), tmp_path, resume=True, progress=False)
    assert run.step_count == 4 and run.opt.param_groups[0]["lr"] == pytest.approx(0.0)
    with pytest.raises(UsageError, match="past the lr decay's end"):
        replace(constant, steps=5, decay_start=2, decay_steps=2)
    with pytest.raises(UsageError, match="cannot change"):  # steps 3 and 4 were trained with the decay
        train_teacher(replace(constant, steps=4, decay_start=3, decay_steps=1), tmp_path, progress=False)


def test_fid_is_zero_against_itself_and_positive_after_a_shift() -> None:
    torch.manual_seed(0)
    net = FeatureNet(width=4).eval()
    images = load_dataset("mnist", "heldout").images[:300]
    ref = FeatureStats.of(features_and_probs(net, images)[0])
    same = score_samples(net, images, ref).fid
    shifted = score_samples(net, (images + 0.5).clamp(-1, 1), ref).fid
    assert abs(same) < 1e-6 * shifted and shifted > 0.1 * float(np.trace(ref.cov))
    a = FeatureStats(np.zeros(2), np.diag([1.0, 4.0]))
    b = FeatureStats(np.array([1.0, 0.0]), np.diag([4.0, 1.0]))
    assert frechet_distance(a, b) == pytest.approx(1.0 + 1.0 + 1.0)  # |dmu|^2 + sum (sqrt(a_i) - sqrt(b_i))^2


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_sids_noise_levels_drive_a_distill_run(files: dict[str, Path], tmp_path: Path) -> None:
    cfg = distill_config(files, preset="sid", features="none", steps=2, gen_sigma="rho", gen_sigma_min=0.0)
    row = run_distill(cfg, tmp_path, progress=False)
    assert row["step"] == 2 and np.isfinite(row["loss_generator"]) and row["skipped_generator_steps"] == 0


@pytest.mark.parametrize("preset", ["uni-fkl", "uni-rkl"])
def test_distill_runs_and_writes_outputs(files: dict[str, Path], tmp_path: Path, preset: str) -> None:
    row = run_distill(distill_config(files, preset=preset), tmp_path, progress=False)
    assert row["step"] == 4 and np.isfinite(row["fid"]) and 0 <= row["accuracy"] <= 1
    for key in ("loss_generator", "loss_fake"):
        assert np.isfinite(row[key])
    assert (row["ratio_evaluations"] > 0) == (preset == "uni-fkl")
    assert row["skipped_generator_steps"] == 0
    rows = _rows(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert 0 < float(rows[0]["cpu_seconds"]) <= float(rows[1]["cpu_seconds"])
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "samples" / "step_000004.png").stat().st_size > 0
    assert load_torch(tmp_path / "generator.pt")["sigma_init"] == 2.5
    teacher = load_denoiser(files["teacher"]).state_dict()  # the generator started as a copy of the teacher
    trained = load_torch(tmp_path / "checkpoint.pt")["generator"]
    moved = [k for k, v in teacher.items() if not torch.equal(trained[f"denoiser.{k}"], v)]
    assert moved, "the generator steps changed no parameter"


def test_warmup_trains_only_the_fake_score_and_ratio_head(files: dict[str, Path], tmp_path: Path) -> None:
    cfg = distill_config(files, preset="uni-fkl", features="none", steps=3, warmup_steps=2, checkpoint_every=1)
    run_distill(replace(cfg, steps=2), tmp_path, progress=False)
    state = load_torch(tmp_path / "checkpoint.pt")
    start = load_teacher(cfg.teacher, load_dataset("mnist", "train")).state_dict()
    assert all(torch.equal(state["generator"]["denoiser." + k], v) for k, v in start.items())
    assert all(torch.equal(state["ema"]["denoiser." + k], v) for k, v in start.items())
    assert not all(torch.equal(state["fake"][k], v) for k, v in start.items())
    assert state["opt_r"]["state"] and not state["opt_g"]["state"]
    row = run_distill(cfg, tmp_path, progress=False)  # the third step is the first generator step
    assert load_torch(tmp_path / "checkpoint.pt")["opt_g"]["state"] and row["skipped_generator_steps"] == 0
    with pytest.raises(UsageError, match="warmup steps"):
        replace(cfg, warmup_steps=4)


def test_distill_resume_is_bit_for_bit(files: dict[str, Path], tmp_path: Path) -> None:
    cfg = distill_config(files, preset="uni-jeffreys", features="none")
    run_distill(cfg, tmp_path / "straight", progress=False)
    run_distill(replace(cfg, steps=2), tmp_path / "resumed", progress=False)
    run_distill(cfg, tmp_path / "resumed", resume=True, progress=False)
    a = load_torch(tmp_path / "straight" / "checkpoint.pt")
    b = load_torch(tmp_path / "resumed" / "checkpoint.pt")
    for name in ("generator", "ema", "fake", "ratio"):
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name]), name
    with pytest.raises(UsageError, match="other settings"):
        run_distill(replace(cfg, lr_generator=1e-3), tmp_path / "resumed", progress=False)


def test_distill_refuses_to_resume_with_a_replaced_teacher_file(files: dict[str, Path], tmp_path: Path) -> None:
    teacher = tmp_path / "teacher.pt"
    record = load_torch(files["teacher"])
    save_torch(teacher, record)
    cfg = distill_config(files, teacher=str(teacher), features="none", steps=2)
    run_distill(cfg, tmp_path / "run", progress=False)
    run_distill(replace(cfg, steps=3), tmp_path / "run", progress=False)  # the same file: resumes
    first = next(iter(record["state_dict"]))
    record["state_dict"][first] = record["state_dict"][first] + 1e-3  # a newer teacher under the same name
    save_torch(teacher, record)
    with pytest.raises(UsageError, match="another teacher"):
        run_distill(replace(cfg, steps=4), tmp_path / "run", progress=False)


def test_a_run_from_before_the_digest_that_named_mnist_resumes_only_with_the_first_teacher(
    files: dict[str, Path], tmp_path: Path
) -> None:
    cfg = distill_config(files, teacher="mnist", features="none", steps=1, batch_size=2)
    run_distill(cfg, tmp_path / "run", progress=False)
    state = load_torch(tmp_path / "run" / "checkpoint.pt")
    del state["teacher_digest"]  # as written before checkpoints held it, when 'mnist' was today's 'mnist-v1'
    save_torch(tmp_path / "run" / "checkpoint.pt", state)
    with pytest.raises(UsageError, match="another teacher"):
        run_distill(replace(cfg, steps=2), tmp_path / "run", progress=False)
    row = run_distill(replace(cfg, steps=2, teacher="mnist-v1"), tmp_path / "run", progress=False)
    assert row["step"] == 2


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("uni3d: error:") and needle in err, err


def test_bad_input_gives_one_line_errors(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "run")
    common = ["distill", "--teacher", str(files["teacher"]), "--out", out, "--features", "none"]
    _one_line_error(capsys, [*common, "--preset", "uni-nope"], "unknown preset")
    _one_line_error(capsys, [*common, "--batch-size", "0"], "batch size")
    _one_line_error(capsys, ["distill", "--teacher", str(tmp_path / "missing.pt"), "--out", out], "neither a name")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x04not a checkpoint")
    _one_line_error(capsys, ["distill", "--teacher", str(corrupt), "--out", out], "cannot read")
    with pytest.raises(UsageError, match="unknown dataset"):
        load_dataset("cifar10")
    with pytest.raises(UsageError, match="gen_sigma_min"):
        DistillConfig(gen_sigma_min=-1.0)
    with pytest.raises(UsageError, match="gen_sigma one of lognormal, rho"):
        DistillConfig(gen_sigma="uniform")
    _one_line_error(capsys, [*common, "--gen-sigma", "rho", "--gen-t-max", "1.5"], "gen_t_max <= 1")
    with pytest.raises(UsageError, match="ema"):
        DistillConfig(ema=1.5)
    small = EDMDenoiser.build(replace(TINY, resolution=16))
    save_torch(tmp_path / "small.pt", denoiser_record(small))
    with pytest.raises(UsageError, match="resolution"):
        load_teacher(str(tmp_path / "small.pt"), load_dataset("mnist", "train"))


# ---- NVlabs EDM pickles: written here in the same format (persistence calls), read by the restricted unpickler


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _edm_snapshot(reconstruct: types.FunctionType, resolution: int = 32, class_name: str = "Conv2d") -> dict:
    weight, bias = torch.nn.Parameter(torch.randn(4, 1, 3, 3)), torch.randn(4)
    conv = Persistent(reconstruct, class_name, {"_parameters": OrderedDict(weight=weight, bias=bias)})
    unet = Persistent(reconstruct, "SongUNet", {"_modules": OrderedDict(enc=torch.nn.ModuleDict(), conv=conv)})
    kwargs = {"img_resolution": resolution, "img_channels": 1, "label_dim": 10, "model_type": "SongUNet"}
    ema = Persistent(
        reconstruct, "EDMPrecond", {"_init_kwargs": kwargs, "sigma_data": 0.5, "_modules": {"model": unet}}
    )
    loss = Persistent(reconstruct, "EDMLoss", {"P_mean": -1.2, "P_std": 1.2, "sigma_data": 0.5})
    return {"ema": ema, "loss_fn": loss, "augment_pipe": None, "dataset_kwargs": {"resolution": resolution}}


def test_edm_pickle_is_read_without_running_code(persistence: types.FunctionType, tmp_path: Path) -> None:
    snapshot = _edm_snapshot(persistence)
    path = tmp_path / "network-snapshot.pkl"
    path.write_bytes(pickle.dumps(snapshot))
    net = read_edm_network(path, resolution=32, channels=1)
    conv = snapshot["ema"].state["_modules"]["model"].state["_modules"]["conv"].state["_parameters"]
    assert net.class_name == "EDMPrecond" and net.model_type == "SongUNet" and net.label_dim == 10
    assert set(net.state_dict) == {"model.conv.weight", "model.conv.bias"}
    assert torch.equal(net.state_dict["model.conv.weight"], conv["weight"].detach())
    assert torch.equal(net.state_dict["model.conv.bias"], conv["bias"])
    with pytest.raises(UsageError, match="resolution mismatch"):
        read_edm_network(path, resolution=64)
    with pytest.raises(UsageError, match="SongUNet") as err:
        load_teacher(str(path), load_dataset("mnist", "train"))
    assert "\n" not in str(err.value)


def test_edm_pickle_rejects_foreign_and_corrupt_files(persistence: types.FunctionType, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"ema": _Evil(marker)}))
    with pytest.raises(UsageError, match="refusing to load posix.system"):
        read_edm_network(evil)
    assert not marker.exists()
    odd = tmp_path / "odd.pkl"
    odd.write_bytes(pickle.dumps(_edm_snapshot(persistence, class_name="Backdoor")))
    with pytest.raises(UsageError, match="Backdoor"):
        read_edm_network(odd)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(UsageError, match="not an EDM network snapshot"):
        read_edm_network(plain)
    corrupt = tmp_path / "corrupt.pkl"
    corrupt.write_bytes(pickle.dumps(_edm_snapshot(persistence))[:-40])
    with pytest.raises(UsageError, match="not a readable pickle") as err:
        read_edm_network(corrupt)
    assert "\n" not in str(err.value)


def test_ddp_gloo_two_processes_match_one(files: dict[str, Path], tmp_path: Path) -> None:
    cfg = distill_config(files, preset="uni-jeffreys", features="none", steps=2, checkpoint_every=2, sample_every=2)
    run_distill(cfg, tmp_path / "one", progress=False)
    argv = ["--teacher", cfg.teacher, "--preset", cfg.preset, "--features", "none", "--steps", "2"]
    argv += ["--batch-size", "4", "--checkpoint-every", "2", "--sample-every", "2", "--ratio-width", "8"]
    argv += ["--eval-samples", str(cfg.eval_samples), "--eval-every", str(cfg.eval_every)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "uni3d", "distill", *argv, "--out", str(tmp_path / "two"), "--json"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    one, two = load_torch(tmp_path / "one" / "checkpoint.pt"), load_torch(tmp_path / "two" / "checkpoint.pt")
    assert two["config"] == one["config"]
    for row_one, row_two in zip(one["rows"], two["rows"], strict=True):  # losses of every step but the last
        for key in ("loss_fake", "loss_ratio", "loss_generator", "grad_norm"):
            assert row_two[key] == pytest.approx(row_one[key], rel=1e-4, abs=1e-6), key
    # Gradients: Adam's second moments (sums of squared gradients) agree relative to the largest entry; the
    # parameters agree to a fraction of a learning rate (Adam turns rounding noise of near-zero gradient entries
    # into updates of up to lr, so an exact parameter match is not expected from any all-reduce).
    for opt in ("opt_g", "opt_f", "opt_r"):
        v1 = torch.cat([state["exp_avg_sq"].flatten() for state in one[opt]["state"].values()])
        v2 = torch.cat([state["exp_avg_sq"].flatten() for state in two[opt]["state"].values()])
        assert (v1 - v2).abs().max() <= 1e-3 * v1.max(), opt
    for name, lr in (("generator", cfg.lr_generator), ("fake", cfg.lr_fake), ("ratio", cfg.lr_ratio)):
        for key, value in one[name].items():
            assert (value - two[name][key]).abs().max() <= 2 * cfg.steps * lr, (name, key)


def test_bench_images_means_spreads_resume_and_section(files: dict[str, Path], tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "benchmarks.md").write_text("# Benchmarks\n\n<!-- toy:begin -->\ntoy table\n<!-- toy:end -->\n")
    argv = ["bench", "images", "--teacher", str(files["teacher"]), "--features", str(files["features"])]
    argv += ["--steps", "3", "--seeds", "0,1", "--teacher-draws", "2", "--eval-samples", "20", "--nfes", "1"]
    argv += ["--presets", "di,uni-fkl@1e-4", "--warmup-steps", "1", "--batch-size", "4", "--docs", str(docs)]
    assert main(argv) == 0
    text = (docs / "benchmarks.md").read_text()
    assert "toy table" in text and text.count("<!-- images:begin -->") == 1
    result = json.loads((docs / "benchmarks" / "images.json").read_text())
    assert len(result["rows"]) == 2 + 2 * 2 and result["rows_done"] == [6, 6]
    summary = {r["method"]: r for r in result["summary"]}
    assert set(summary) == {"teacher Heun", "di@0.0001", "uni-fkl@0.0001-const-r"}
    for method, row in summary.items():
        runs = [r["fid"] for r in result["rows"] if r["method"] == method]
        assert row["runs"] == 2 and row["fid"] == pytest.approx(sum(runs) / 2)
        assert row["fid_sd"] == pytest.approx(abs(runs[0] - runs[1]) / 2**0.5)
    seeds = [r for r in result["rows"] if r["method"] == "di@0.0001"]
    assert [r["seed"] for r in seeds] == [0, 1] and all(r["steps"] == 3 for r in seeds)
    assert seeds[0]["fid"] != seeds[1]["fid"]  # seeds differ, so the spread measures something
    draws = [r for r in result["rows"] if r["method"] == "teacher Heun"]
    assert [r["draw"] for r in draws] == [0, 1] and draws[0]["fid"] != draws[1]["fid"]
    assert "Target not evaluated (needs the teacher at NFE 35" in text
    assert (docs / "benchmarks" / "images" / "di@0.0001.png").exists()
    assert (docs / "benchmarks" / "images" / "teacher_nfe1.png").exists()
    first = (docs / "benchmarks" / "images.json").read_text()
    assert main(argv) == 0  # the same command: every run already measured, nothing retrained
    assert json.loads((docs / "benchmarks" / "images.json").read_text())["rows"] == json.loads(first)["rows"]
    assert main([*argv[:-2], "--seeds", "0,x", "--docs", str(docs)]) == 2


def test_verdict_needs_the_ratio_apart_spreads_and_peers() -> None:
    teacher = {"method": "teacher Heun", "nfe": 35, "fid": 20.0, "fid_sd": 1.0}
    uni = {"method": "uni-jeffreys@0.0001-const-r", "nfe": 1, "fid": 15.0, "fid_sd": 1.0}
    peers = [
        {"method": "di@0.0001", "nfe": 1, "fid": 18.0, "fid_sd": 1.0},
        {"method": "sid@0.0001", "nfe": 1, "fid": 17.0, "fid_sd": 2.0},
    ]
    assert "**met**" in verdict([teacher, uni, *peers])
    assert "**missed**" in verdict([teacher, {**uni, "fid": 16.5}, *peers])  # 16.5 > 0.8 x 20
    assert "**missed**" in verdict([teacher, {**uni, "fid_sd": 4.5}, *peers])  # spreads overlap
    assert "**missed**" in verdict([teacher, uni, {**peers[0], "fid": 14.0}])  # di is better
    assert "**missed**" in verdict([teacher, uni])  # no peers: not shown to beat them
    assert "not evaluated" in verdict([uni, *peers])


def test_image_runs_summary_uses_the_last_evaluation_within_the_budget() -> None:
    rows = [
        {"step": s, "cpu_seconds": c, "fid": f} for s, c, f in ((10, 10.0, 50.0), (20, 20.0, 30.0), (30, 40.0, 20.0))
    ]
    rows.insert(1, {"step": 15, "cpu_seconds": 15.0, "fid": None})  # a checkpoint row without evaluation
    cfg = DistillConfig(preset="sid")
    row = summarize("r", cfg, [*rows, {"step": 40, "cpu_seconds": 41.0, "fid": 25.0}], budget=30.0)
    assert (row["fid"], row["step"], row["best_fid"], row["trained_steps"]) == (30.0, 20, 30.0, 40)
    assert summarize("r", cfg, rows, budget=100.0)["fid"] == 20.0
    rows[2]["fid"] = 60.0  # the last in budget is worse than an earlier one: reported, not replaced by the best
    row = summarize("r", cfg, rows, budget=30.0)
    assert (row["fid"], row["best_fid"], row["best_step"]) == (60.0, 50.0, 10)
    with pytest.raises(UsageError, match="no FID evaluation within 5"):
        summarize("r", cfg, rows, budget=5.0)


def test_bench_images_runs_compares_runs_with_the_teacher(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for preset in ("sid", "uni-fkl"):
        run_distill(
            distill_config(files, preset=preset, eval_every=2, warmup_steps=1), tmp_path / preset, progress=False
        )
    docs = tmp_path / "docs"
    runs = [str(tmp_path / "sid"), str(tmp_path / "uni-fkl")]
    assert main(["bench", "images-runs", *runs, "--nfe", "3", "--docs", str(docs)]) == 0
    result = json.loads((docs / "benchmarks" / "images_runs.json").read_text())
    assert result["teacher"]["nfe"] == 3 and [r["run"] for r in result["runs"]] == ["sid", "uni-fkl"]
    assert all(r["step"] == 4 and r["trained_steps"] == 4 for r in result["runs"])
    best = min(result["runs"], key=lambda r: r["fid"])
    assert result["best_run"] == best["run"] and result["target_met"] == (best["fid"] < result["teacher"]["fid"])
    assert (docs / "benchmarks.md").read_text().count("<!-- images-runs:begin -->") == 1
    assert (docs / "benchmarks" / "images_runs.png").exists() and (
        docs / "benchmarks" / "images_runs" / "sid.png"
    ).exists()
    capsys.readouterr()
    assert main(["bench", "images-runs", str(tmp_path / "missing"), "--docs", str(docs)]) == 2
    err = capsys.readouterr().err
    assert "missing is not a uni3d distill run folder" in err and err.count("\n") == 1


def test_a_setting_added_after_the_run_counts_as_its_default(tmp_path: Path) -> None:
    saved = {k: v for k, v in DistillConfig().as_dict().items() if k != "warmup_steps"}  # an older run's config
    check_resumable(saved, DistillConfig().as_dict(), tmp_path, (), DistillConfig().as_dict())
    with pytest.raises(UsageError, match="warmup_steps=0"):
        check_resumable(saved, DistillConfig(warmup_steps=5).as_dict(), tmp_path, (), DistillConfig().as_dict())


def test_distill_terms_reports_each_expanded_term(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for preset in ("uni-fkl", "uni-rkl", "sid"):
        run_distill(distill_config(files, preset=preset, features="none", steps=2), tmp_path / preset, progress=False)
    capsys.readouterr()
    reports = {}
    for preset in ("uni-fkl", "uni-rkl"):
        assert main(["distill-terms", str(tmp_path / preset), "--batch-size", "4", "--json"]) == 0
        reports[preset] = json.loads(capsys.readouterr().out)
    fkl, rkl = reports["uni-fkl"]["grad_norms"], reports["uni-rkl"]["grad_norms"]
    assert list(fkl) == ["sim", "ratio_motion", "di", "fgm"] and reports["uni-fkl"]["step"] == 2
    assert fkl["sim"] > 0 and fkl["ratio_motion"] > 0 and fkl["di"] == 0  # fkl: h = r, so r h' = r and r^2 h'' = 0
    assert rkl["sim"] > 0 and rkl["fgm"] > 0 and rkl["ratio_motion"] == rkl["di"] == 0  # rkl: h constant, no ratio
    assert main(["distill-terms", str(tmp_path / "sid")]) == 2
    assert "does not use the expanded form" in capsys.readouterr().err


def test_no_ratio_motion_holds_every_ratio_constant(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["distill", "--teacher", str(files["teacher"]), "--features", "none", "--preset", "uni-fkl"]
    argv += ["--steps", "2", "--batch-size", "4", "--ratio-width", "8", "--no-ratio-motion", "--json"]
    assert main([*argv, "--out", str(tmp_path / "const")]) == 0
    cfg = DistillConfig.from_dict(json.loads((tmp_path / "const" / "config.json").read_text()))
    assert cfg.ratio_motion is False and DistillConfig().ratio_motion is True
    capsys.readouterr()
    assert main(["distill-terms", str(tmp_path / "const"), "--batch-size", "4", "--json"]) == 0
    norms = json.loads(capsys.readouterr().out)["grad_norms"]
    assert norms["sim"] > 0 and norms["fgm"] > 0 and norms["ratio_motion"] == norms["di"] == 0
    distiller = ImageDistiller(
        cfg, load_teacher(cfg.teacher, load_dataset("mnist", "train")), load_dataset("mnist", "train")
    )
    draw = distiller.draw(0, train_generator=True)
    ratio = distiller.loop.ratio_estimate(distiller.denoise(draw).ratio_logits)
    assert ratio.moves.shape == (4,) and not ratio.moves.any()
    live = ImageDistiller(replace(cfg, ratio_motion=True), distiller.teacher, load_dataset("mnist", "train"))
    live.ratio.load_state_dict(distiller.ratio.state_dict())
    moving = live.loop.ratio_estimate(live.denoise(draw).ratio_logits)
    assert moving.moves.all()  # a fresh head's logits lie inside the clamp
