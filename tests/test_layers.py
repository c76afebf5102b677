"""The layout's rule, checked on every import: building blocks import only blocks, and a task never imports another
task or a tool (docs/design.md, "Layers")."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "uni3d"
BLOCKS = {"losses", "diffusion", "engine", "models", "scene", "export", "config", "errors", "io", "paths"}
TOOLS = {"cli", "app", "bench", "checks"}
IMPORT = re.compile(r"^\s*(?:from|import) (uni3d(?:\.\w+)+)", re.MULTILINE)


def _violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        top = parts[0]
        task = parts[1] if top == "tasks" and len(parts) > 2 else None
        for module in IMPORT.findall(path.read_text()):
            target = module.split(".")[1:]
            if top in BLOCKS and target[0] not in BLOCKS:
                found.append(f"{path.relative_to(PACKAGE)}: block imports {module}")
            if task and target[0] in TOOLS:
                found.append(f"{path.relative_to(PACKAGE)}: task imports tool {module}")
            if task and target[0] == "tasks" and len(target) > 1 and target[1] != task:
                found.append(f"{path.relative_to(PACKAGE)}: task {task} imports {module}")
    return found


def test_no_block_imports_a_task_and_no_task_imports_another() -> None:
    assert _violations() == []


def test_the_check_sees_a_sideways_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "uni3d"
    (fake / "tasks" / "toy").mkdir(parents=True)
    (fake / "scene").mkdir()
    (fake / "tasks" / "toy" / "train.py").write_text("from uni3d.tasks.images.data import load_dataset\n")
    (fake / "scene" / "light.py").write_text("import uni3d.tasks.reconstruct.raster\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert sorted(_violations()) == [
        "scene/light.py: block imports uni3d.tasks.reconstruct.raster",
        "tasks/toy/train.py: task toy imports uni3d.tasks.images.data",
    ]
