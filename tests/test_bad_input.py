"""Bad input, as a new user types it, through the CLI and the app's API: each case ends in one line naming the
problem and exit code 2 (never a traceback, never a silent success), before any model loads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from uni3d.app.settings import AppInputs, build_config
from uni3d.cli.main import main
from uni3d.errors import UsageError

Case = tuple[list[str], str]
"""``(argv, text the one line must hold)``; ``{tmp}``, ``{file}``, ``{prior}`` and friends are filled per test."""

GENERATE: list[Case] = [
    (["generate", ""], "the prompt is empty"),
    (["generate", "   "], "the prompt is empty"),
    (["generate", "\u200b"], "only invisible characters"),
    (["generate", "\u200b \ufeff"], "only invisible characters"),
    (["generate", "a red \x1b[31mcube"], "control characters (U+001B)"),
    (["generate", "a red\ncube"], "control characters (U+000A)"),
    (["generate", "a red cube", "--negative-prompt", "blue\x07"], "the negative prompt holds control"),
    (["generate", "a red cube", "--out", "{file}"], "is a file, not a folder"),
    (["generate", "a red cube", "--out", "{file}/run"], "cannot write there"),
    (["generate", "a red cube", "--device", "tpu"], "unknown device 'tpu'"),
    (["generate", "a red cube", "--device", "cuda:x"], "unknown device"),
    (["generate", "a red cube", "--dtype", "fp8"], "unknown dtype 'fp8'"),
    (["generate", "a red cube", "--preset", "nope"], "unknown preset"),
    (["generate", "a red cube", "--preset", "dmd"], "teacher ODE samples"),
    (["generate", "a red cube", "--recipe", "nope"], "recipe"),
    (["generate", "a red cube", "--steps", "0"], "steps >= 1"),
    (["generate", "a red cube", "--steps", "ten"], "invalid int value: 'ten'"),
    (["generate", "a red cube", "--seed", "-1"], "seed >= 0"),
    (["generate", "a red cube", "--particles", "0"], "particles >= 1"),
    (["generate", "a red cube", "--particles", "1.5"], "invalid int value"),
    (["generate", "a red cube", "--particles", "2", "--particles-per-step", "3"], "particles_per_step"),
    (["generate", "a red cube", "--guidance-scale", "-1"], "guidance_scale >= 0"),
    (["generate", "a red cube", "--render-size", "8"], "render_size 16-1024"),
    (["generate", "a red cube", "--noise", "loud"], "noise"),
    (["generate", "a red cube", "--t-schedule", "sideways"], "sideways"),
    (["generate", "a red cube", "--t-min", "2"], "t_min"),
    (["generate", "a red cube", "--prior", "{tmp}/missing"], "no such folder"),
    (["generate", "a red cube", "--prior", "{broken_index}"], "model_index.json"),
    (["generate", "a red cube", "--prior", "{no_unet}"], "folder has no unet"),
    (["generate", "a red cube", "--config", "{tmp}/missing.yaml"], "missing.yaml"),
    (["generate", "a red cube", "--config", "{unknown_key}"], "wobble"),
    (["generate", "a red cube", "--config", "{bad_yaml}"], "bad.yaml"),
    (["generate"], "the following arguments are required: PROMPT"),
    (["generate", "a red cube", "--nope"], "unrecognized arguments: --nope"),
]

BATCH: list[Case] = [
    (["batch", "{tmp}/none.txt", "--out", "{tmp}/b"], "cannot read prompt file"),
    (["batch", "{not_utf8}", "--out", "{tmp}/b"], "not_utf8.txt:2: the line is not UTF-8"),
    (["batch", "{escape}", "--out", "{tmp}/b"], "escape.txt:1: the prompt holds control characters"),
    (["batch", "{empty}", "--out", "{tmp}/b"], "holds no prompts"),
    (["batch", "{invisible}", "--out", "{tmp}/b"], "holds no prompts"),
    (["batch", "{good}", "--out", "{tmp}/b", "--shard", "3/2"], "--shard"),
    (["batch", "{good}", "--out", "{tmp}/b", "--shard", "x"], "--shard"),
    (["batch", "{good}"], "needs a prompt FILE and --out DIR"),
    (["batch", "{good}", "--out", "{file}"], "is a file, not a folder"),
    (["batch", "{good}", "--out", "{tmp}/b", "--preset", "uni-nope"], "unknown preset"),
    (["batch", "{good}", "--out", "{tmp}/b", "--device", "tpu"], "unknown device"),
    (["batch", "{good}", "--out", "{tmp}/b", "--prior", "{broken_index}"], "model_index.json"),
]

OTHERS: list[Case] = [
    (["bogus"], "invalid choice: 'bogus'"),
    (["clean", "{tmp}/missing"], "is not a folder"),
    (["clean"], "the following arguments are required: DIR"),
    (["distill", "--device", "tpu", "--out", "{tmp}/d"], "unknown device"),
    (["distill", "--preset", "nope", "--out", "{tmp}/d"], "unknown preset"),
    (["bench", "nope"], "invalid choice: 'nope'"),
    (["check", "nope"], "invalid choice: 'nope'"),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory, tiny_prior) -> dict[str, str]:
    """The files and folders the cases name: a plain file, damaged prior folders, bad prompt and config files."""
    tmp = tmp_path_factory.mktemp("bad")
    folder, _ = tiny_prior
    (tmp / "afile").write_text("not a folder\n")
    broken = shutil.copytree(folder, tmp / "broken-index")
    (broken / "model_index.json").write_text("{not json")
    no_unet = shutil.copytree(folder, tmp / "no-unet")
    shutil.rmtree(no_unet / "unet")
    files = {
        "not_utf8": b"a red cube\n\xff\xfe broken\n",
        "escape": b"a red \x1b[31mcube\n",
        "empty": b"# nothing\n\n",
        "invisible": "\u200b\n   \n".encode(),
        "good": b"a red cube\n",
    }
    for name, data in files.items():
        (tmp / f"{name}.txt").write_bytes(data)
    (tmp / "unknown.yaml").write_text("wobble: 3\n")
    (tmp / "bad.yaml").write_text("generate: [unclosed\n")
    return {
        "tmp": str(tmp),
        "file": str(tmp / "afile"),
        "broken_index": str(broken),
        "no_unet": str(no_unet),
        "unknown_key": str(tmp / "unknown.yaml"),
        "bad_yaml": str(tmp / "bad.yaml"),
        **{name: str(tmp / f"{name}.txt") for name in files},
    }


def _one_line(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    assert main(argv) == 2, argv
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("uni3d: error:"), captured.err
    assert needle in captured.err, captured.err


@pytest.mark.parametrize(
    ("argv", "needle"), GENERATE + BATCH + OTHERS, ids=lambda v: " ".join(v)[:60] if isinstance(v, list) else None
)
def test_bad_command_lines_end_in_one_line_and_exit_code_2(
    argv: list[str], needle: str, places: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _one_line(capsys, [word.format(**places) for word in argv], needle)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_that_is_not_here_is_named(places: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    _one_line(
        capsys, ["generate", "a red cube", "--device", "cuda", "--out", places["tmp"] + "/g"], "CUDA is not available"
    )


def test_nothing_is_created_for_a_refused_command_line(places: dict[str, str], capsys) -> None:
    out = Path(places["tmp"]) / "never"
    _one_line(capsys, ["generate", "a red \x1b[31mcube", "--out", str(out)], "control characters")
    assert not out.exists()


def test_running_out_of_memory_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import uni3d.cli.text_to_3d as cli

    def allocate(_: object) -> int:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: 4e11 bytes")

    monkeypatch.setattr(cli, "_clean", allocate)
    _one_line(capsys, ["clean", "."], "out of memory")


APP: list[tuple[dict[str, object], str]] = [
    ({"prompt": "\u200b"}, "only invisible characters"),
    ({"prompt": "a red \x1b[31mcube"}, "control characters"),
    ({"negative_prompt": "blue\x07"}, "negative prompt holds control"),
    ({"seed": -1}, "seed"),
    ({"steps": 999999}, "steps must be from 1 to 5000"),
    ({"steps": -5}, "steps must be from 1 to 5000"),
    ({"guidance_scale": 1e9}, "guidance scale must be from"),
    ({"render_size": 100000}, "render size must be"),
    ({"particles": 0}, "particles must be from 1 to 8"),
    ({"turntable_frames": 1000}, "turntable frames must be from 2 to 120"),
]


@pytest.mark.parametrize(("changes", "needle"), APP)
def test_bad_app_inputs_are_one_line_errors(changes: dict[str, object], needle: str) -> None:
    with pytest.raises(UsageError, match=needle) as err:
        build_config(AppInputs(**{"prompt": "a red cube", **changes}))
    assert "\n" not in str(err.value)
