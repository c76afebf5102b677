"""Where the repository's shipped files live: ``assets/`` (the embedded prior, the MNIST teacher and feature net)
and ``tools/`` (the glTF validator), found from the installed (editable) package."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
ASSETS = REPO_ROOT / "assets"
TOOLS = REPO_ROOT / "tools"
