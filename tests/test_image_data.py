"""The distiller's data sources (EDM dataset zip / folder, .npz, none), SiDA's adversarial term, and every named
EDM recipe run for two steps on a tiny random EDM network of its dataset's shape (CPU)."""

from __future__ import annotations

import json
import math
import pickle
import types
import zipfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from edm_snapshots import write_snapshot

from uni3d.cli.main import main
from uni3d.errors import UsageError
from uni3d.losses import get_preset
from uni3d.models.edm.networks import DhariwalUNet, SongUNet
from uni3d.tasks.images.data import ImageSet
from uni3d.tasks.images.distill import ImageDistiller
from uni3d.tasks.images.distill_config import DistillConfig
from uni3d.tasks.images.distill_run import load_teacher, teacher_and_data
from uni3d.tasks.images.image_data import EDMImageFiles, NoImages, check_data, load_image_data
from uni3d.tasks.images.recipes import RECIPES, ema_per_step, get_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n: int, size: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def _png(image: np.ndarray) -> bytes:
    return iio.imwrite("<bytes>", image[..., 0] if image.shape[-1] == 1 else image, extension=".png")


def write_edm_dataset(path: Path, images: np.ndarray, labels: list[int] | None) -> Path:
    """A dataset in the layout of EDM's ``dataset_tool.py`` (zip when ``path`` ends in .zip, else a folder)."""
    names = [f"{i // 1000:05d}/img{i:08d}.png" for i in range(len(images))]
    meta = json.dumps({"labels": None if labels is None else [[n, int(c)] for n, c in zip(names, labels, strict=True)]})
    files = {**{n: _png(im) for n, im in zip(names, images, strict=True)}, "dataset.json": meta.encode()}
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as z:
            for name, data in reversed(files.items()):  # stored out of order: the reader sorts by name
                z.writestr(name, data)
    else:
        for name, data in files.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(data)
    return path


@pytest.mark.parametrize("kind", ["zip", "folder", "npz"])
def test_image_sources_read_pixels_and_labels(tmp_path: Path, kind: str) -> None:
    images, labels = _images(7, 8), [3, 1, 4, 1, 5, 9, 2]
    if kind == "npz":
        path = tmp_path / "data.npz"
        np.savez(path, images=images, labels=np.array(labels))
    else:
        path = write_edm_dataset(tmp_path / ("data.zip" if kind == "zip" else "data"), images, labels)
    data = load_image_data(str(path))
    assert len(data) == 7 and data.image_shape == (3, 8, 8)
    assert data.labels is not None and data.labels.tolist() == labels
    batch = data.batch(torch.tensor([5, 0, 5]))
    expected = torch.from_numpy(images[[5, 0, 5]]).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert batch.dtype == torch.float32 and torch.equal(batch, expected)
    if kind == "zip":
        assert isinstance(data, EDMImageFiles) and data._zip is not None
        clone = pickle.loads(pickle.dumps(data))  # worker processes reopen the zip
        assert torch.equal(clone.batch(torch.tensor([2])), data.batch(torch.tensor([2])))


def test_unlabelled_grey_dataset_and_mnist(tmp_path: Path) -> None:
    path = write_edm_dataset(tmp_path / "grey.zip", _images(3, 8, channels=1), None)
    data = load_image_data(str(path))
    assert data.image_shape == (1, 8, 8) and data.labels is None
    mnist = load_image_data("mnist")
    assert isinstance(mnist, ImageSet) and mnist.image_shape == (1, 32, 32) and len(mnist) == 4000


def test_bad_data_is_a_one_line_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("readme.txt", "no images")
    unlabelled = tmp_path / "part.zip"
    with zipfile.ZipFile(unlabelled, "w") as z:
        for i, image in enumerate(_images(2, 8)):
            z.writestr(f"00000/img{i:08d}.png", _png(image))
        z.writestr("dataset.json", json.dumps({"labels": [["00000/img00000000.png", 1]]}))
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as z:
        z.writestr("00000/img00000000.png", b"not a png")
    np.savez(tmp_path / "floats.npz", images=np.zeros((2, 8, 8, 3), np.float32))
    np.savez(tmp_path / "other.npz", pictures=_images(2, 8))
    (tmp_path / "notes.txt").write_text("hello")
    cases = [
        (tmp_path / "missing.zip", "no data at"),
        (empty, "holds no images"),
        (unlabelled, "no label for"),
        (broken, "cannot decode"),
        (tmp_path / "floats.npz", "need uint8"),
        (tmp_path / "other.npz", "need 'images'"),
        (tmp_path / "notes.txt", "is not 'mnist'"),
    ]
    for path, needle in cases:
        with pytest.raises(UsageError, match=needle) as err:
            load_image_data(str(path))
        assert "\n" not in str(err.value), path
    with pytest.raises(UsageError, match="pass --data"):
        check_data(NoImages((3, 8, 8)), num_classes=0, needs_images=True)
    unlabelled_set = ImageSet(torch.zeros(2, 3, 8, 8), None)
    with pytest.raises(UsageError, match="no labels"):
        check_data(unlabelled_set, num_classes=10, needs_images=True)
    check_data(unlabelled_set, num_classes=10, needs_images=False)  # data-free presets never read them
    with pytest.raises(UsageError, match="labels up to 12"):
        check_data(ImageSet(torch.zeros(2, 3, 8, 8), torch.tensor([0, 12])), num_classes=10, needs_images=True)
    with pytest.raises(UsageError, match="negative label"):
        check_data(ImageSet(torch.zeros(2, 3, 8, 8), torch.tensor([0, -1])), num_classes=10, needs_images=True)


TINY_CIFAR = dict(
    img_resolution=32, in_channels=3, out_channels=3, label_dim=10, augment_dim=9, model_channels=8,
    channel_mult=[1, 2], num_blocks=1, attn_resolutions=[16], dropout=0.0,
)  # fmt: skip
TINY_IMAGENET = dict(
    img_resolution=64, in_channels=3, out_channels=3, label_dim=1000, model_channels=16, channel_mult=[1, 2],
    num_blocks=1, attn_resolutions=[16], dropout=0.0,
)  # fmt: skip


def _tiny_teacher(tmp_path: Path, persistence: types.FunctionType, name: str) -> Path:
    """A random network with the shape and classes of the recipe's EDM checkpoint, as an EDM pickle."""
    torch.manual_seed(0)
    if "imagenet" in name:
        net: torch.nn.Module = DhariwalUNet(**TINY_IMAGENET)
    else:
        net = SongUNet(**{**TINY_CIFAR, "label_dim": 0 if "uncond" in name else 10})
    return write_snapshot(tmp_path / f"{name}.pkl", persistence, net, sigma_data=0.5)


@pytest.mark.parametrize("name", list(RECIPES))
def test_each_recipe_runs_two_steps_on_a_tiny_edm_network(
    persistence: types.FunctionType, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    recipe = get_recipe(name)
    teacher = _tiny_teacher(tmp_path, persistence, name)
    size = 64 if "imagenet" in name else 32
    data = write_edm_dataset(tmp_path / "data.zip", _images(6, size), [0, 1, 2, 3, 4, 9])
    out = tmp_path / "run"
    args = ["distill", "--recipe", name, "--teacher", str(teacher), "--out", str(out), "--batch-size", "2"]
    args += ["--warmup-steps", "1", "--checkpoint-every", "1", "--ratio-width", "8", "--json"]
    if recipe.data != "none":
        args += ["--data", str(data)]
    assert main([*args, "--steps", "2"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["step"] == 2 and math.isfinite(row["loss_generator"]) and math.isfinite(row["loss_fake"])
    assert row["skipped_generator_steps"] == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["recipe"] == name and saved["batch_size"] == 2 and saved["steps"] == 2  # flags win
    batch = recipe.settings["batch_size"]
    for key in ("preset", "lr_generator", "lr_fake", "sigma_init", "gen_sigma", "gen_t_max", "fake_p_mean"):
        assert saved[key] == recipe.settings[key], key
    assert saved["ema"] == pytest.approx(ema_per_step(2e6 if batch == 8192 else 5e5, batch))
    assert saved["gan_weight"] == recipe.settings.get("gan_weight", 0.0)
    needs_head = saved["gan_weight"] > 0 or get_preset(saved["preset"]).uses_ratio
    assert needs_head == (row.get("loss_ratio") is not None and math.isfinite(row["loss_ratio"]))
    assert main([*args, "--steps", "3"]) == 0  # the same recipe resumes
    assert json.loads((out / "config.json").read_text())["steps"] == 3


def test_recipe_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cases = [
        (["--recipe", "sid-cifar100"], "unknown distill recipe 'sid-cifar100'; valid: sid-cifar10-uncond"),
        (["--recipe", "sid-cifar10-cond"], "download https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-cifar10"),
    ]
    for extra, needle in cases:
        assert main(["distill", *extra, "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err
    (tmp_path / "edm-cifar10-32x32-cond-vp.pkl").write_bytes(b"")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        assert main(["distill", "--recipe", "uni-cifar10-cond", "--out", "run"]) == 2
        assert "cifar10-32x32.zip: make it with EDM's dataset_tool.py" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_data_none_takes_the_teachers_shape_and_refuses_ratio_presets(
    persistence: types.FunctionType, tmp_path: Path
) -> None:
    teacher = _tiny_teacher(tmp_path, persistence, "sid-cifar10-cond")
    model, data = teacher_and_data(str(teacher), "none")
    assert data.image_shape == (3, 32, 32) == model.image_shape and len(data) == 0
    ImageDistiller(DistillConfig(teacher=str(teacher), data="none", preset="sid", batch_size=2), model, data)
    with pytest.raises(UsageError, match="pass --data"):
        cfg = DistillConfig(teacher=str(teacher), data="none", preset="uni-fkl", batch_size=2)
        ImageDistiller(cfg, model, data)
    with pytest.raises(UsageError, match="dataset mismatch"):
        load_teacher(str(teacher), load_image_data("mnist"))


def test_adversarial_term_reaches_only_the_generator(persistence: types.FunctionType, tmp_path: Path) -> None:
    teacher = _tiny_teacher(tmp_path, persistence, "sid-cifar10-cond")
    data_path = write_edm_dataset(tmp_path / "data.zip", _images(6, 32), [0, 1, 2, 3, 4, 9])
    model, data = teacher_and_data(str(teacher), str(data_path))
    cfg = DistillConfig(teacher=str(teacher), data=str(data_path), preset="sid", batch_size=2, gan_weight=0.5)
    distiller = ImageDistiller(cfg, model, data)
    assert distiller.loop.ratio is not None  # the head is trained as the discriminator even for sid
    draw = distiller.draw(0, train_generator=True)
    distiller.adversarial_loss(draw).backward()
    assert all(p.grad is None for p in distiller.fake.parameters())
    assert all(p.grad is None for p in distiller.ratio.parameters())
    grads = [p.grad for p in distiller.generator.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    with pytest.raises(UsageError, match="gan_weight >= 0"):
        DistillConfig(gan_weight=-1)
