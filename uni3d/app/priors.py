"""The priors the page offers: the embedded one first, then Stable Diffusion folders found on this machine.

A prior folder is any folder with ``model_index.json`` (diffusers layout): under ``assets/priors/``, in extra
folders given with ``uni3d app --priors DIR`` (the folder itself or its children), and in the Hugging Face cache
(``$HF_HUB_CACHE`` or ``~/.cache/huggingface/hub``, each snapshot of a ``models--org--name`` entry). Nothing is
downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from uni3d.paths import REPO_ROOT
from uni3d.tasks.text_to_3d.config import EMBEDDED_PRIOR, EMBEDDED_PRIORS_FOLDER


def _is_prior(folder: Path) -> bool:
    return (folder / "model_index.json").is_file()


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return []


def hub_cache() -> Path:
    """The Hugging Face hub cache folder (not created)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return home / "hub"


def find_priors(extra: Iterable[Path] = (), cache: Path | None = None) -> list[tuple[str, str]]:
    """``(label, value)`` pairs for a dropdown: the default embedded prior (value :data:`EMBEDDED_PRIOR`), the
    other embedded priors of ``assets/priors``, then each local SD folder once (value: its path)."""
    found: list[tuple[str, str]] = [(f"embedded shapes prior ({EMBEDDED_PRIOR})", EMBEDDED_PRIOR)]
    seen = {(REPO_ROOT / EMBEDDED_PRIOR).resolve()}
    candidates = [
        (f"embedded {path.name} prior (assets/priors/{path.name})", path) for path in _children(EMBEDDED_PRIORS_FOLDER)
    ]
    for folder in map(Path, extra):
        for path in [folder, *_children(folder)]:
            candidates.append((str(path), path))
    for model in _children(cache if cache is not None else hub_cache()):
        if model.name.startswith("models--"):
            for snap in _children(model / "snapshots"):
                candidates.append((f"{model.name[8:].replace('--', '/')} ({snap.name[:8]})", snap))
    for label, path in candidates:
        if _is_prior(path) and path.resolve() not in seen:
            seen.add(path.resolve())
            found.append((label, str(path)))
    return found
