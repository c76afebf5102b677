"""The distiller's data (``--data``): offline MNIST, EDM's dataset layout, an ``.npz``, or none at all.

What the distiller needs from data is small: the image shape, and for presets with a ratio head a batch of
real images (and their labels when the teacher is class-conditional) at a time (:class:`ImageSource`).

- ``mnist``: the fixed training split of :mod:`uni3d.tasks.images.data`, in memory.
- an EDM dataset, as EDM's ``dataset_tool.py`` writes it (``cifar10-32x32.zip``, ``imagenet-64x64.zip``): PNG
  images in a zip file or a folder, labels in its ``dataset.json`` (``{"labels": [[name, label], ...]}`` or
  ``null``). Images are decoded batch by batch, never all at once, so ImageNet-64's 1.28 M images cost only
  their file index in memory.
- an ``.npz`` with ``images`` (``uint8``, ``[N, H, W, C]``) and optionally ``labels`` (``[N]``), in memory.
- ``none``: no images; the shape comes from the teacher. Enough for presets without a ratio head (SiD, DI,
  DMD without regression pairs...), which are data-free: the generator learns from the teacher alone.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import imageio.v3 as iio
import numpy as np
import torch
from torch import Tensor

from uni3d.errors import UsageError
from uni3d.tasks.images.data import ImageSet, load_dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
DATA_HELP = (
    "'mnist', 'none' (data-free presets; shape from the teacher), an EDM dataset zip or folder "
    "(dataset_tool.py layout, e.g. cifar10-32x32.zip) or an .npz with uint8 images [N, H, W, C] and labels"
)

NEEDS_IMAGES = "this preset needs real images (its ratio head compares them with the generator's): pass --data"


class ImageSource(Protocol):
    """Real images as the distiller reads them: shape, count, labels, and a batch by index."""

    @property
    def image_shape(self) -> tuple[int, int, int]: ...

    @property
    def labels(self) -> Tensor | None: ...

    def __len__(self) -> int: ...

    def batch(self, idx: Tensor) -> Tensor:
        """Images ``idx`` as float32 ``[B, C, H, W]`` in ``[-1, 1]``."""
        ...


def _to_float(images: np.ndarray) -> Tensor:
    """``uint8`` ``[B, H, W, C]`` to float32 ``[B, C, H, W]`` in ``[-1, 1]`` (EDM's scaling)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _nhwc(image: np.ndarray) -> np.ndarray:
    """One decoded image as ``[H, W, C]`` (grey gains a channel axis, RGBA loses alpha)."""
    return (image[..., None] if image.ndim == 2 else image)[..., :3]


@dataclass(frozen=True)
class NoImages:
    """``--data none``: the teacher's image shape and nothing else."""

    image_shape: tuple[int, int, int]
    labels: Tensor | None = None

    def __len__(self) -> int:
        return 0

    def batch(self, idx: Tensor) -> Tensor:
        raise UsageError(NEEDS_IMAGES)


class EDMImageFiles:
    """EDM's dataset layout in a zip or a folder, decoded lazily (module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        try:
            all_names = self._all_names()
        except (OSError, zipfile.BadZipFile) as err:
            raise UsageError(f"cannot read the dataset {path} ({type(err).__name__}: {err})") from None
        self.names = sorted(n for n in all_names if Path(n).suffix.lower() in IMAGE_SUFFIXES)
        if not self.names:
            raise UsageError(f"the dataset {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self._labels = self._read_labels("dataset.json" in all_names)
        first = self._decode(self.names[0])
        self._shape = (first.shape[2], first.shape[0], first.shape[1])

    def _all_names(self) -> list[str]:
        if self.path.is_dir():
            return [p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()]
        return self._archive().namelist()

    def _archive(self) -> zipfile.ZipFile:
        if self._zip is None:
            self._zip = zipfile.ZipFile(self.path)
        return self._zip

    def _read(self, name: str) -> bytes:
        if self.path.is_dir():
            return (self.path / name).read_bytes()
        return self._archive().read(name)

    def _decode(self, name: str) -> np.ndarray:
        try:
            image = _nhwc(np.asarray(iio.imread(io.BytesIO(self._read(name)), plugin="pillow")))
        except Exception as err:  # noqa: BLE001 - any undecodable file is the user's data problem
            raise UsageError(f"{self.path}: cannot decode {name} ({type(err).__name__})") from None
        if image.dtype != np.uint8:
            raise UsageError(f"{self.path}: {name} is {image.dtype}, need 8-bit images")
        return image

    def _read_labels(self, has_json: bool) -> Tensor | None:
        if not has_json:
            return None
        try:
            table = json.loads(self._read("dataset.json")).get("labels")
        except (ValueError, AttributeError) as err:
            raise UsageError(f"{self.path}: dataset.json is not EDM's {{'labels': ...}} ({err})") from None
        if table is None:
            return None
        by_name = {str(name): int(label) for name, label in table}
        missing = [n for n in self.names if n not in by_name]
        if missing:
            raise UsageError(f"{self.path}: dataset.json has no label for {missing[0]} ({len(missing)} images)")
        return torch.tensor([by_name[n] for n in self.names], dtype=torch.int64)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self._shape

    @property
    def labels(self) -> Tensor | None:
        return self._labels

    def __len__(self) -> int:
        return len(self.names)

    def batch(self, idx: Tensor) -> Tensor:
        images = [self._decode(self.names[int(i)]) for i in idx]
        shapes = {im.shape for im in images}
        if len(shapes) > 1 or next(iter(shapes)) != (self._shape[1], self._shape[2], self._shape[0]):
            raise UsageError(f"{self.path}: images differ in size or channels ({sorted(shapes)}, first {self._shape})")
        return _to_float(np.stack(images))

    def __getstate__(self) -> dict[str, Any]:
        """Picklable for worker processes: the open zip handle is reopened there."""
        return {**self.__dict__, "_zip": None}

    def close(self) -> None:
        """Close the zip handle (a later batch reopens it)."""
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def __del__(self) -> None:
        self.close()


def _load_npz(path: Path) -> ImageSet:
    try:
        with np.load(path, allow_pickle=False) as data:
            if "images" not in data.files:
                raise UsageError(f"{path} holds {', '.join(data.files)}: need 'images' (and optionally 'labels')")
            images, labels = data["images"], data["labels"] if "labels" in data.files else None
    except UsageError:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's input problem
        raise UsageError(f"cannot read {path} ({type(err).__name__})") from None
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise UsageError(f"{path}: need uint8 images [N, H, W, C], got {images.dtype} {list(images.shape)}")
    images = images[..., None] if images.ndim == 3 else images[..., :3]
    if labels is not None and labels.shape != (images.shape[0],):
        raise UsageError(f"{path}: labels {list(labels.shape)} do not match {images.shape[0]} images")
    return ImageSet(_to_float(images), None if labels is None else torch.as_tensor(labels, dtype=torch.int64))


def load_image_data(spec: str, teacher_shape: tuple[int, int, int] | None = None) -> ImageSource:
    """The data named by ``spec`` (module docstring); ``none`` needs ``teacher_shape``."""
    if spec == "mnist":
        return load_dataset("mnist", "train")
    if spec == "none":
        if teacher_shape is None:
            raise UsageError("--data none takes the image shape from the teacher, which is not loaded yet")
        return NoImages(teacher_shape)
    path = Path(spec)
    if not path.exists():
        raise UsageError(f"no data at {spec}: pass {DATA_HELP}")
    if path.suffix == ".npz" and path.is_file():
        return _load_npz(path)
    if path.is_dir() or (path.is_file() and zipfile.is_zipfile(path)):
        return EDMImageFiles(path)
    raise UsageError(f"data {spec!r} is not {DATA_HELP}")


def check_data(data: ImageSource, *, num_classes: int, needs_images: bool) -> None:
    """One-line errors where the data cannot serve the run: no images or no labels where the preset's ratio head
    needs them (labels only for a class-conditional teacher), or labels beyond the teacher's classes."""
    labels = data.labels
    if needs_images and len(data) == 0:
        raise UsageError(NEEDS_IMAGES)
    if needs_images and num_classes and labels is None:
        raise UsageError(
            "the teacher is class-conditional and this preset compares labelled real images with the generator's: "
            "the data has no labels (EDM's dataset.json, or 'labels' in the .npz)"
        )
    if labels is not None and len(labels) and int(labels.min()) < 0:
        raise UsageError(f"the data has a negative label ({int(labels.min())}); labels are class indices from 0")
    if num_classes and labels is not None and len(labels) and int(labels.max()) >= num_classes:
        raise UsageError(f"the data has labels up to {int(labels.max())}, the teacher knows {num_classes} classes")
