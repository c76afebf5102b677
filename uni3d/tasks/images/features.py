"""The FID feature network: a small CNN classifier trained on the held-out split (``uni3d train-features``).

Its penultimate layer (global-average-pooled, ``FEATURE_DIM`` wide) defines the features of FID
(:mod:`uni3d.tasks.images.fid`); its softmax gives the accuracy and entropy of generated digits. It never sees the
training split, on which its accuracy is measured (and whose features are FID's reference statistics).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from uni3d.errors import UsageError
from uni3d.tasks.images.data import NUM_CLASSES, load_dataset
from uni3d.tasks.images.files import load_torch, save_torch

FEATURES_KIND = "uni3d-feature-net"


FEATURE_SHAPE = (1, 32, 32)
"""``(channels, height, width)`` of the images the feature net scores."""


class FeatureNet(nn.Module):
    """conv-SiLU stack 32 -> 16 -> 8 pixels, global mean pool (the features), linear classifier."""

    def __init__(self, width: int = 16, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        w = width
        layers: list[nn.Module] = []
        for c_in, c_out, stride in ((1, w, 1), (w, w, 2), (w, 2 * w, 1), (2 * w, 2 * w, 2), (2 * w, 4 * w, 1)):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(4 * w, num_classes)
        self.width = width

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features ``[B, 4 * width]`` of images ``[B, 1, 32, 32]`` in ``[-1, 1]``."""
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class FeatureTrainConfig:
    """Training settings of the feature net (Adam, random shifts of up to ``shift`` pixels)."""

    steps: int = 1500
    batch_size: int = 128
    lr: float = 2e-3
    width: int = 16
    shift: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0 or self.width < 1 or self.shift < 0:
            raise UsageError("need steps, batch size, width >= 1, lr > 0, shift >= 0")


def random_shift(x: Tensor, shift: int, gen: torch.Generator) -> Tensor:
    """Translate each image by up to ``shift`` pixels (edge padding with the background value -1)."""
    if shift == 0:
        return x
    padded = F.pad(x, (shift,) * 4, value=-1.0)
    offsets = torch.randint(0, 2 * shift + 1, (x.shape[0], 2), generator=gen).tolist()
    h, w = x.shape[-2:]
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)])


@torch.no_grad()
def accuracy(net: FeatureNet, images: Tensor, labels: Tensor, batch: int = 500) -> float:
    """Share of ``images`` classified as ``labels``."""
    pred = torch.cat([net(images[i : i + batch]).argmax(1) for i in range(0, images.shape[0], batch)])
    return float((pred == labels).float().mean())


def train_feature_net(cfg: FeatureTrainConfig, progress: bool = True) -> tuple[FeatureNet, float]:
    """Train on the held-out split; return the net (eval mode, frozen) and its accuracy on the training split."""
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    data = load_dataset("mnist", "heldout")
    net = FeatureNet(cfg.width)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    for _ in tqdm(range(cfg.steps), desc="features", disable=not progress):
        idx = torch.randint(len(data), (cfg.batch_size,), generator=gen)
        loss = F.cross_entropy(net(random_shift(data.images[idx], cfg.shift, gen)), data.labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval().requires_grad_(False)
    test = load_dataset("mnist", "train")
    return net, accuracy(net, test.images, test.labels)


def save_feature_net(path: str | Path, net: FeatureNet, info: dict[str, Any]) -> Path:
    """Write the net with its width and ``info`` (training settings, accuracy)."""
    return save_torch(path, {"kind": FEATURES_KIND, "width": net.width, "state_dict": net.state_dict(), **info})


def load_feature_net(path: str | Path) -> FeatureNet:
    """A file from :func:`save_feature_net`, frozen, in eval mode."""
    record = load_torch(path)
    if record.get("kind") != FEATURES_KIND:
        raise UsageError(f"{path} is not a uni3d feature-net file (kind {record.get('kind')!r})")
    net = FeatureNet(int(record["width"]))
    net.load_state_dict(record["state_dict"])
    return net.eval().requires_grad_(False)


def feature_record(cfg: FeatureTrainConfig, acc: float) -> dict[str, Any]:
    """The ``info`` saved with a trained net: its settings and accuracy on the training split."""
    return {"config": asdict(cfg), "accuracy_on_train_split": acc}
