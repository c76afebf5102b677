"""``uni3d fid``: plumbing of the TorchScript-detector FID with a tiny scripted stand-in for Inception-v3."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from torch import Tensor

from uni3d.cli.main import main
from uni3d.tasks.images.fid import FeatureStats, frechet_distance
from uni3d.tasks.images.inception_fid import DETECTOR_URL, inception_fid

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # scripting the stand-in detector


class _Detector(torch.nn.Module):
    """Called like NVlabs' detector: ``uint8 [N, 3, H, W]`` in, ``[N, 6]`` features out with ``return_features``."""

    def forward(self, images: Tensor, return_features: bool = False) -> Tensor:
        assert images.dtype == torch.uint8 and images.shape[1] == 3
        x = images.to(torch.float32) / 255.0
        feats = torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)
        return feats if return_features else feats.sum(dim=1)


@pytest.fixture
def fid_files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 8, 8, 3), dtype=np.uint8)
    detector = tmp_path / "inception-2015-12-05.pt"
    torch.jit.save(torch.jit.script(_Detector()), str(detector))
    feats = _Detector()(torch.from_numpy(images).permute(0, 3, 1, 2), return_features=True).double().numpy()
    ref = tmp_path / "ref.npz"
    np.savez(ref, mu=feats.mean(0), sigma=np.cov(feats, rowvar=False))
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, im in enumerate(images):
        iio.imwrite(folder / f"{i:06d}.png", im)
    npz = tmp_path / "samples.npz"
    np.savez(npz, arr_0=(images // 2).astype(np.uint8))
    return {"detector": detector, "ref": ref, "pngs": folder, "npz": npz}


def test_fid_of_the_reference_images_is_zero_and_a_shift_is_not(fid_files: dict[str, Path]) -> None:
    same = inception_fid(fid_files["pngs"], fid_files["detector"], fid_files["ref"])
    darker = inception_fid(fid_files["npz"], fid_files["detector"], fid_files["ref"])
    assert abs(same) < 1e-8 and darker > 0.01
    with np.load(fid_files["ref"]) as ref:
        expected_mean_gap = float(((ref["mu"][:3] / 2 - ref["mu"][:3]) ** 2).sum())
    assert darker > expected_mean_gap * 0.5  # the means of the darker images move by about half
    a = FeatureStats(np.zeros(2), np.eye(2))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-12)


def test_fid_cli_and_grey_npz(fid_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["fid", str(fid_files["pngs"]), "--detector", str(fid_files["detector"]), "--ref", str(fid_files["ref"])]
    assert main([*argv, "--json"]) == 0
    assert abs(json.loads(capsys.readouterr().out)["fid"]) < 1e-8
    grey = tmp_path / "grey.npz"
    np.savez(grey, np.full((5, 8, 8), 128, dtype=np.uint8))  # [N, H, W]: one channel, repeated to RGB
    assert main(["fid", str(grey), *argv[2:], "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("FID ")


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("uni3d: error:"), err
    assert all(n in err for n in needles), err


def test_fid_missing_and_bad_files_are_one_line_errors(
    fid_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pngs, det, ref = str(fid_files["pngs"]), str(fid_files["detector"]), str(fid_files["ref"])
    missing = str(tmp_path / "nowhere" / "inception-2015-12-05.pt")
    _one_line_error(capsys, ["fid", pngs, "--detector", missing, "--ref", ref], missing, DETECTOR_URL)
    _one_line_error(capsys, ["fid", pngs, "--ref", ref], "inception-2015-12-05.pt", "--detector")  # default path
    pkl = tmp_path / "inception-2015-12-05.pkl"
    pkl.write_bytes(b"\x80\x04.")
    _one_line_error(capsys, ["fid", pngs, "--detector", str(pkl), "--ref", ref], "does not unpickle", DETECTOR_URL)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip")
    _one_line_error(capsys, ["fid", pngs, "--detector", str(junk), "--ref", ref], "not a TorchScript detector")
    _one_line_error(capsys, ["fid", pngs, "--detector", det, "--ref", str(tmp_path / "c.npz")], "cifar10-32x32.npz")
    bad_ref = tmp_path / "bad.npz"
    np.savez(bad_ref, mean=np.zeros(6))
    _one_line_error(capsys, ["fid", pngs, "--detector", det, "--ref", str(bad_ref)], "mu and sigma")
    floats = tmp_path / "floats.npz"
    np.savez(floats, np.zeros((4, 8, 8, 3), dtype=np.float32))
    _one_line_error(capsys, ["fid", str(floats), "--detector", det, "--ref", ref], "uint8")
    _one_line_error(capsys, ["fid", str(tmp_path / "none"), "--detector", det, "--ref", ref], "folder of PNG")
    if not torch.cuda.is_available():
        _one_line_error(capsys, ["fid", pngs, "--detector", det, "--ref", ref, "--device", "cuda"], "CUDA")
