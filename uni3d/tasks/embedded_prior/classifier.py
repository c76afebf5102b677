"""A small shape-and-colour classifier of the shapes dataset's images: the judge of the prior's samples.

A 3-stage CNN (3x3 convs, GroupNorm, SiLU, stride-2 downsampling, global average pooling) with two linear heads,
shape (6 classes) and colour (10 classes), trained with the sum of the cross-entropies on the ground-truth labels
of every dataset image whatever its caption says. A ``parts`` classifier (for a dataset with composites) has three
more heads: the layout (single, front, stack, beside), and the second part's shape and colour (each with a class
"none" for a single primitive); the first two heads then name part 0 (a body, the upper part, or, for a pair side
by side, which has no order, the part first in label order). The last ``val_fraction`` of the set is held out and
its accuracies are saved with the weights, so a reader of the prior's accuracy knows how good the judge is.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm import tqdm

from uni3d.errors import UsageError
from uni3d.io import atomic_write
from uni3d.models.vocabulary import COLOUR_NAMES, SHAPE_NAMES
from uni3d.tasks.embedded_prior.composites import LAYOUTS
from uni3d.tasks.embedded_prior.dataset import ShapesDataset

FORMAT = "uni3d-shape-classifier-2"
FIRST_FORMAT = "uni3d-shape-classifier-1"
"""Files with shape and colour heads only (read as a classifier without ``parts``)."""


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.GroupNorm(8, c_out),
        nn.SiLU(),
        nn.Conv2d(c_out, c_out, 3, stride=2, padding=1),
        nn.GroupNorm(8, c_out),
        nn.SiLU(),
    )


class ShapeClassifier(nn.Module):
    """Images ``(B, 3, H, W)`` in ``[0, 1]`` -> logits of each head: ``shape (B, 6)``, ``colour (B, 10)`` and, with
    ``parts``, ``layout (B, 4)``, ``shape1 (B, 7)``, ``colour1 (B, 11)`` (last class: no second part)."""

    def __init__(self, width: int = 16, parts: bool = False) -> None:
        super().__init__()
        self.width, self.parts = width, parts
        self.features = nn.Sequential(_block(3, width), _block(width, 2 * width), _block(2 * width, 4 * width))
        self.shape_head = nn.Linear(4 * width, len(SHAPE_NAMES))
        self.colour_head = nn.Linear(4 * width, len(COLOUR_NAMES))
        if parts:
            self.layout_head = nn.Linear(4 * width, len(LAYOUTS))
            self.shape1_head = nn.Linear(4 * width, len(SHAPE_NAMES) + 1)
            self.colour1_head = nn.Linear(4 * width, len(COLOUR_NAMES) + 1)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Logits of every head: ``shape``, ``colour`` and, with ``parts``, ``layout``, ``shape1``, ``colour1``."""
        h = self.features(images * 2 - 1).mean((2, 3))
        out = {"shape": self.shape_head(h), "colour": self.colour_head(h)}
        if self.parts:
            out |= {"layout": self.layout_head(h), "shape1": self.shape1_head(h), "colour1": self.colour1_head(h)}
        return out

    @torch.no_grad()
    def predict_all(self, images: Tensor, batch: int = 256) -> dict[str, Tensor]:
        """Class indices ``(B,)`` of every head."""
        self.eval()
        outs = [self(images[i : i + batch]) for i in range(0, len(images), batch)]
        return {head: torch.cat([o[head] for o in outs]).argmax(1) for head in outs[0]}

    def predict(self, images: Tensor, batch: int = 256) -> tuple[Tensor, Tensor]:
        """Class indices ``(B,)`` of shape and colour (of part 0)."""
        heads = self.predict_all(images, batch)
        return heads["shape"], heads["colour"]


@dataclass(frozen=True)
class ClassifierConfig:
    """Training settings of the classifier."""

    steps: int = 600
    batch_size: int = 64
    lr: float = 2e-3
    width: int = 16
    val_fraction: float = 0.1
    seed: int = 0
    parts: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 1_000_000:
            raise UsageError(f"--steps must be between 1 and 1000000, got {self.steps}")
        if not 0 < self.val_fraction < 1:
            raise UsageError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.width < 8 or self.width % 8:
            raise UsageError(f"width must be a multiple of 8, got {self.width}")


@dataclass
class ClassifierReport:
    """Held-out accuracies of a trained classifier (``parts``: of the other heads, and of all five at once)."""

    shape_accuracy: float
    colour_accuracy: float
    n_val: int
    layout_accuracy: float | None = None
    shape1_accuracy: float | None = None
    colour1_accuracy: float | None = None
    all_accuracy: float | None = None


def part_labels(data: ShapesDataset) -> dict[str, Tensor]:
    """Each head's label ``(N,)`` (see :class:`ShapeClassifier`): a pair side by side in label order, an absent
    second part as the last class."""
    shapes, colours = data.part_shape.copy(), data.part_colour.copy()
    beside = data.layout == LAYOUTS.index("beside")
    swap = beside & ((shapes[:, 1] < shapes[:, 0]) | ((shapes[:, 1] == shapes[:, 0]) & (colours[:, 1] < colours[:, 0])))
    shapes[swap], colours[swap] = shapes[swap][:, ::-1], colours[swap][:, ::-1]
    shapes[shapes[:, 1] < 0, 1], colours[colours[:, 1] < 0, 1] = len(SHAPE_NAMES), len(COLOUR_NAMES)
    columns = {"shape": shapes[:, 0], "colour": colours[:, 0], "layout": data.layout, "shape1": shapes[:, 1]}
    return {name: torch.from_numpy(x.copy()).long() for name, x in (columns | {"colour1": colours[:, 1]}).items()}


def dataset_tensors(data: ShapesDataset) -> tuple[Tensor, dict[str, Tensor]]:
    """``images (N, 3, S, S)`` in ``[0, 1]`` and every head's labels (:func:`part_labels`)."""
    images = torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 255
    return images, part_labels(data)


def train_classifier(
    data: ShapesDataset, cfg: ClassifierConfig, progress: bool = True
) -> tuple[ShapeClassifier, ClassifierReport]:
    """Train on the first ``1 - val_fraction`` of ``data`` (Adam, cosine decay) and score the rest."""
    images, labels = dataset_tensors(data)
    n_val = max(1, int(len(images) * cfg.val_fraction))
    if len(images) - n_val < 1:
        raise UsageError(f"the dataset has {len(images)} images; the classifier needs at least 2")
    n_train = len(images) - n_val
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = ShapeClassifier(cfg.width, cfg.parts)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    model.train()
    for _ in tqdm(range(cfg.steps), desc="train-shape-classifier", unit="step", disable=not progress):
        idx = torch.randint(n_train, (cfg.batch_size,), generator=gen)
        logits = model(images[idx])
        loss = sum(F.cross_entropy(out, labels[head][idx]) for head, out in logits.items())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    predicted = model.predict_all(images[n_train:])
    right = {head: pred == labels[head][n_train:] for head, pred in predicted.items()}
    accuracy = {f"{head}_accuracy": float(ok.float().mean()) for head, ok in right.items()}
    if cfg.parts:
        accuracy["all_accuracy"] = float(torch.stack(list(right.values())).all(0).float().mean())
    return model, ClassifierReport(n_val=n_val, **accuracy)


def save_classifier(model: ShapeClassifier, report: ClassifierReport, path: str | Path) -> Path:
    """Weights, width, class names and held-out accuracies in one ``torch.save`` file, written atomically."""
    buf = io.BytesIO()
    torch.save(
        {
            "format": FORMAT,
            "width": model.width,
            "parts": model.parts,
            "shape_names": list(SHAPE_NAMES),
            "colour_names": list(COLOUR_NAMES),
            "report": asdict(report),
            "state_dict": model.state_dict(),
        },
        buf,
    )
    return atomic_write(path, buf.getvalue())


def load_classifier(path: str | Path) -> tuple[ShapeClassifier, ClassifierReport]:
    """Read a file of :func:`save_classifier`; a missing, corrupt or foreign file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(
            f"no shape classifier at {path}; train one with: uni3d train-shape-classifier --dataset FILE --out {path}"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a truncated or foreign file
        raise UsageError(f"{path} is not a readable shape classifier ({type(err).__name__})") from err
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT, FIRST_FORMAT):
        raise UsageError(f"{path} is not a {FORMAT} file")
    if tuple(payload["shape_names"]) != SHAPE_NAMES or tuple(payload["colour_names"]) != COLOUR_NAMES:
        raise UsageError(f"{path} was trained on other shape/colour names; retrain it")
    model = ShapeClassifier(payload["width"], payload.get("parts", False))
    model.load_state_dict(payload["state_dict"])
    return model.eval(), ClassifierReport(**payload["report"])
