"""The ``uni3d`` command starts without the heavy libraries, and importing diffusers prints no torchvision notice."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("diffusers", "peft", "transformers")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)


def test_the_cli_parser_imports_no_diffusion_library() -> None:
    # every subcommand is registered (argparse built), yet diffusers, peft and transformers wait for a command
    # that needs them: `uni3d --help` and the one-line usage errors come back in torch's import time
    code = (
        "import sys; from uni3d.cli import main; main.build_parser(); "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    assert _python(code).stdout.strip() == ""


def test_importing_diffusers_after_uni3d_prints_no_torchvision_notice() -> None:
    shown = _python("import uni3d, diffusers, peft; from diffusers import StableDiffusionPipeline")
    assert "torchvision" not in shown.stderr + shown.stdout
