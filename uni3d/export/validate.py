"""Run the Khronos glTF validator (npm ``gltf-validator`` in ``tools/node_modules``) on a GLB file."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from uni3d.paths import TOOLS


def validator_missing() -> str | None:
    """Why the validator cannot run here (``None`` when it can): no ``node``, or the npm package not installed."""
    if shutil.which("node") is None:
        return "node is not on PATH (Debian: apt-get install nodejs npm)"
    if not (TOOLS / "node_modules" / "gltf-validator" / "package.json").is_file():
        return "gltf-validator is not installed: run tools/install_gltf_validator.sh"
    return None


def validate_gltf(path: str | Path) -> dict[str, Any]:
    """The validator's JSON report; ``report["issues"]["numErrors"]`` counts errors."""
    reason = validator_missing()
    if reason is not None:
        raise RuntimeError(reason)
    done = subprocess.run(
        ["node", str(TOOLS / "gltf_validate.cjs"), str(path)], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout)
