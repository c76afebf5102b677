"""FID with NVlabs' Inception-v3 detector against EDM reference statistics (``uni3d fid``).

The detector is the TorchScript ``inception-2015-12-05.pt`` that NVlabs publishes for StyleGAN2-ADA / EDM
metrics (the TensorFlow FID Inception graph, ported): it takes ``uint8`` images ``[N, 3, H, W]`` (it resizes
to 299 itself) and ``detector(images, return_features=True)`` gives the 2048-d pool features. Grey images are
repeated to 3 channels, as EDM's ``fid.py`` does. Reference statistics are EDM's ``fid-refs/*.npz`` (``mu``
``[2048]``, ``sigma`` ``[2048, 2048]``). FID is :func:`uni3d.tasks.images.fid.frechet_distance` in float64.
The files are not shipped (licences, size): a missing or unreadable one is a one-line error naming the file
and where to get it.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from torch import Tensor

from uni3d.devices import resolve_device
from uni3d.errors import UsageError
from uni3d.tasks.images.fid import FeatureStats, frechet_distance

DETECTOR_NAME = "inception-2015-12-05.pt"
DETECTOR_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
REFS_URL = "https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/"
REF_NAMES = ("cifar10-32x32.npz", "imagenet-64x64.npz")


def load_detector(path: str | Path, device: torch.device) -> torch.jit.ScriptModule:
    """The TorchScript detector at ``path`` in eval mode on ``device``."""
    path = Path(path)
    hint = f"put NVlabs' TorchScript Inception-v3 {DETECTOR_NAME} (download {DETECTOR_URL}) at {path}"
    if not path.is_file():
        raise UsageError(f"no FID detector at {path}: {hint}, or pass --detector FILE")
    if path.suffix == ".pkl":
        raise UsageError(f"{path} is the pickled detector, which uni3d does not unpickle: {hint}")
    try:
        with warnings.catch_warnings():  # torch 2.x deprecates TorchScript; NVlabs' detector is TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            detector = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError, zipfile.BadZipFile) as err:
        raise UsageError(f"{path} is not a TorchScript detector ({type(err).__name__}): {hint}") from None
    return detector.eval()


def load_reference(path: str | Path) -> FeatureStats:
    """``mu`` and ``sigma`` of an EDM ``fid-refs`` file (float64)."""
    path = Path(path)
    hint = f"pass EDM's reference statistics, e.g. {' or '.join(REF_NAMES)} from {REFS_URL}"
    if not path.is_file():
        raise UsageError(f"no FID reference statistics at {path}: {hint}")
    try:
        with np.load(path, allow_pickle=False) as data:
            mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's input problem
        raise UsageError(
            f"{path} is not an FID reference .npz with mu and sigma ({type(err).__name__}): {hint}"
        ) from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise UsageError(f"{path}: mu {mu.shape} and sigma {sigma.shape} are not [d] and [d, d]")
    return FeatureStats(mu, sigma)


def _as_nhwc(images: np.ndarray, source: Path) -> np.ndarray:
    """``[N, H, W, 1|3]`` (a grey ``[N, H, W]`` gains a channel axis, RGBA loses alpha)."""
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise UsageError(f"{source}: need uint8 images [N, H, W, 1|3|4], got {images.dtype} {list(images.shape)}")
    return images[..., :3]


def load_samples(path: str | Path) -> np.ndarray:
    """``uint8`` images ``[N, H, W, C]`` from a folder of PNGs (sorted by name) or an ``.npz`` (its one array,
    or ``arr_0`` as written by ``np.savez``)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.png"))
        if not files:
            raise UsageError(f"no .png images in {path}")
        images = [_as_nhwc(np.asarray(iio.imread(f))[None], f)[0] for f in files]
        if len({im.shape for im in images}) > 1:  # grey and colour PNGs mixed: all to RGB
            images = [np.repeat(im, 3 // im.shape[-1], axis=-1) for im in images]
        if len({im.shape for im in images}) > 1:
            raise UsageError(f"the PNGs in {path} differ in size ({images[0].shape} and others)")
        return np.stack(images)
    if path.suffix != ".npz" or not path.is_file():
        raise UsageError(f"samples {path} must be a folder of PNG images or an .npz of uint8 NHWC images")
    try:
        with np.load(path, allow_pickle=False) as data:
            key = "arr_0" if "arr_0" in data.files else data.files[0] if len(data.files) == 1 else None
            if key is None:
                raise UsageError(f"{path} holds {', '.join(data.files)}: name the images arr_0")
            images = data[key]
    except UsageError:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's input problem
        raise UsageError(f"cannot read {path} ({type(err).__name__})") from None
    return _as_nhwc(images, path)


@torch.no_grad()
def detector_features(
    detector: torch.jit.ScriptModule, images: np.ndarray, device: torch.device, batch: int = 64
) -> np.ndarray:
    """Features ``[N, d]`` (float64) of ``uint8`` NHWC images."""
    chunks: list[Tensor] = []
    for i in range(0, images.shape[0], batch):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch])).permute(0, 3, 1, 2).to(device)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        chunks.append(detector(x, return_features=True).to(torch.float64).cpu())
    return torch.cat(chunks).numpy()


def inception_fid(samples: str | Path, detector: str | Path, reference: str | Path, device: str = "cpu") -> float:
    """FID of the images in ``samples`` against ``reference`` in the detector's feature space."""
    dev = resolve_device(device)
    ref = load_reference(reference)
    net = load_detector(detector, dev)
    images = load_samples(samples)
    if images.shape[0] < 2:
        raise UsageError(f"{samples}: FID needs at least 2 images, got {images.shape[0]}")
    feats = detector_features(net, images, dev)
    if feats.ndim != 2 or feats.shape[1] != ref.mean.shape[0]:
        raise UsageError(f"the detector gives {list(feats.shape)} features, the reference has {ref.mean.shape[0]}")
    return frechet_distance(FeatureStats.of(feats), ref)
