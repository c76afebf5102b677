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


def test_help_imports_no_torch_and_lists_every_command() -> None:
    # `uni3d --help` and `uni3d bench --help` build only the command table: no task module, no torch
    code = (
        "import sys, contextlib, io; from uni3d.cli.main import main; buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    codes = [main(['--help']), main(['bench', '--help'])]\n"
        "print(codes, 'torch' in sys.modules); print(buf.getvalue())"
    )
    shown = _python(code).stdout
    assert shown.startswith("[0, 0] False")
    from uni3d.cli.commands import BENCHMARKS, COMMANDS

    assert all(name in shown for name in [*COMMANDS, *BENCHMARKS])


def test_every_command_of_the_table_is_built_by_its_module() -> None:
    from uni3d.cli.commands import BENCHMARKS, COMMANDS
    from uni3d.cli.main import build_parser

    for table, words in ((COMMANDS, []), (BENCHMARKS, ["bench"])):
        for name in table:
            parser = build_parser([*words, name])  # only this command's module is imported
            sub = parser._subparsers._group_actions[0].choices  # argparse keeps them here
            if words:
                sub = sub["bench"]._subparsers._group_actions[0].choices
            assert sub[name].get_default("func") is not None or sub[name]._subparsers is not None, name
