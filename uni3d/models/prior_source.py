"""Where a diffusion prior's weights are, and in which dtype, checked before anything heavy is imported: a local
folder in diffusers layout, or a hub id for the Hugging Face cache. Every problem is a one-line error saying how to
provide the weights."""

from __future__ import annotations

import json
from pathlib import Path

from uni3d.errors import UsageError

SUBFOLDERS = ("vae", "text_encoder", "tokenizer", "unet", "scheduler")
PRIOR_DTYPES = ("fp32", "fp16", "bf16")
"""Names of the prior's weight dtypes (:data:`uni3d.models.stable_diffusion.DTYPES` maps them to torch's)."""


def check_prior_dtype(name: str) -> None:
    """One-line error unless ``name`` is one of :data:`PRIOR_DTYPES`."""
    if name not in PRIOR_DTYPES:
        raise UsageError(f"unknown dtype {name!r}; valid: {', '.join(PRIOR_DTYPES)}")


def missing_prior(source: str, detail: str) -> UsageError:
    """The one-line error for a prior that cannot be loaded, saying how to provide the weights."""
    detail = " ".join(detail.split())[:200]
    return UsageError(
        f"cannot load the diffusion prior {source!r} ({detail}); provide the weights as a local folder in diffusers "
        "layout (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/), as a hub id already in the "
        "Hugging Face cache (huggingface-cli download ID), or add --allow-download"
    )


def resolve_prior_source(source: str | Path) -> str:
    """A local SD folder as a path string, or ``source`` unchanged if it can only be a hub id ``org/name``."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        missing = [name for name in SUBFOLDERS if not (path / name).is_dir()]
        if missing:
            raise missing_prior(text, f"folder has no {', '.join(missing)}")
        _check_model_index(path)
        return str(path)
    looks_like_hub_id = text.count("/") <= 1 and not text.startswith((".", "/", "~")) and "\\" not in text
    if not looks_like_hub_id:
        raise missing_prior(text, "no such folder")
    return text


def _check_model_index(folder: Path) -> None:
    """A folder's ``model_index.json``, when present, must be a JSON object (diffusers reads the pipeline from it)."""
    index = folder / "model_index.json"
    if not index.exists():
        return
    try:
        ok = isinstance(json.loads(index.read_text(encoding="utf-8")), dict)
    except (OSError, ValueError) as err:
        raise missing_prior(str(folder), f"model_index.json is unreadable: {err}") from None
    if not ok:
        raise missing_prior(str(folder), "model_index.json is not a JSON object")
