"""Run-folder files: checkpoints (``torch.save``, atomic), denoiser files, metrics CSV, image grids (PNG)."""

from __future__ import annotations

import csv
import hashlib
import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import torch
from torch import Tensor

from uni3d.errors import UsageError
from uni3d.io import atomic_write
from uni3d.models.edm.denoiser import EDMDenoiser
from uni3d.models.edm.networks import EDMNetConfig, build_edm_net
from uni3d.models.edm.precond import EDM, Precond
from uni3d.models.edm.unet import UNet, UNetConfig

DENOISER_KIND = "uni3d-edm-denoiser"


def save_torch(path: str | Path, obj: Any) -> Path:
    """``torch.save`` through :func:`uni3d.io.atomic_write`: an interrupted save never corrupts the old file."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write(path, buf.getvalue())


def load_torch(path: str | Path) -> dict[str, Any]:
    """A file written by :func:`save_torch` (tensors, numbers, strings, lists and dicts only: ``weights_only``)."""
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols; the error below says it all
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}") from None
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's input problem
        raise UsageError(f"cannot read {path}: corrupt or not a uni3d file ({type(err).__name__})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{path} does not hold a uni3d checkpoint (a mapping)")
    return obj


def denoiser_record(model: EDMDenoiser) -> dict[str, Any]:
    """What a denoiser file holds: kind, architecture (``unet``: uni3d's UNet, or ``edm_net``: an EDM network
    from :mod:`uni3d.models.edm.networks`), preconditioning, ``sigma_data`` and the parameters."""
    record: dict[str, Any] = {"kind": DENOISER_KIND, "sigma_data": model.sigma_data}
    if isinstance(model.net.cfg, EDMNetConfig):
        record["edm_net"] = model.net.cfg.as_dict()
    else:
        cfg = asdict(model.net.cfg)
        cfg["channels"] = list(cfg["channels"])
        record["unet"] = cfg
    if model.precond != EDM:
        record["precond"] = model.precond.as_dict()
    return {**record, "state_dict": model.state_dict()}


def denoiser_from_record(record: dict[str, Any], source: str | Path) -> EDMDenoiser:
    """Rebuild an :class:`EDMDenoiser` from :func:`denoiser_record`'s mapping."""
    if record.get("kind") != DENOISER_KIND:
        raise UsageError(f"{source} is not a uni3d denoiser file (kind {record.get('kind')!r})")
    precond = Precond(**record["precond"]) if "precond" in record else EDM
    if "edm_net" in record:
        net: Any = build_edm_net(EDMNetConfig(record["edm_net"]["arch"], dict(record["edm_net"]["kwargs"])))
    else:
        net = UNet(UNetConfig.from_dict(record["unet"]))
    model = EDMDenoiser(net, float(record["sigma_data"]), precond)
    model.load_state_dict(record["state_dict"])
    return model.requires_grad_(False).eval()


def load_denoiser(path: str | Path) -> EDMDenoiser:
    """A denoiser file written with :func:`denoiser_record` (e.g. ``teacher.pt``), frozen, in eval mode."""
    return denoiser_from_record(load_torch(path), path)


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """All ``rows`` as one CSV (header: the union of keys, in first-seen order), written atomically."""
    header: list[str] = []
    for row in rows:
        header += [k for k in row if k not in header]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write(path, buf.getvalue())


def image_grid_png(path: str | Path, images: Tensor, columns: int = 10) -> Path:
    """Images ``[N, C, H, W]`` in ``[-1, 1]`` tiled row-major with a 1-pixel gap; non-finite pixels are red."""
    n, c, h, w = images.shape
    rows = math.ceil(n / columns)
    x = images.detach().float().cpu()
    bad = ~torch.isfinite(x).all(dim=1, keepdim=True)
    rgb = ((x.nan_to_num(0.0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).expand(n, 3, h, w).clone()
    rgb[:, 0:1][bad], rgb[:, 1:3][bad.expand(n, 2, h, w)] = 255, 0
    sheet = torch.full((3, rows * (h + 1) + 1, columns * (w + 1) + 1), 64, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, columns)
        sheet[:, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + col * (w + 1) : 1 + col * (w + 1) + w] = rgb[i]
    return atomic_write(path, iio.imwrite("<bytes>", sheet.permute(1, 2, 0).numpy(), extension=".png"))


def check_resumable(
    saved: dict[str, Any],
    new: dict[str, Any],
    out: Path,
    allowed: Sequence[str],
    defaults: dict[str, Any] | None = None,
) -> None:
    """A one-line error naming every setting that differs from the saved run, except those in ``allowed``.

    A setting missing from ``saved`` (added to the config after the run was made) counts as its value in
    ``defaults``: the run was made with the behaviour that default keeps.
    """
    saved = {**(defaults or {}), **saved}
    diff = [k for k in new if k not in allowed and saved.get(k) != new[k]]
    if diff:
        raise UsageError(
            f"{out} was run with other settings ({', '.join(f'{k}={saved.get(k)!r}' for k in diff)}); "
            "use the same settings to resume, or another --out"
        )


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameter and buffer bytes, by name: it tells whether a resumed run got the same
    teacher (a named teacher such as ``mnist`` can be replaced by a newer file)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
