"""``uni3d check gpu`` (``make gpu-check``): one call that settles every open CUDA item on a machine with a GPU.

In order: the CUDA extras (nerfacc from PyPI; tinycudann from its source, which needs the CUDA toolkit and the
network), the parity tests of the compiled backends against the pure-PyTorch paths and the CUDA device tests, the
Stable Diffusion step benchmark at SD 1.5 and 2.1 sizes in fp16, and the renderer benchmark (rays/s, eager, compiled
and CUDA). Each step runs as its own process with its own time limit; a failed step is recorded and the next one
runs. Every step's outcome goes to ``docs/benchmarks/gpu_check.json`` and a section of ``docs/benchmarks.md``; the
benchmarks write their own sections as usual. Without a GPU the command says so in one line and does nothing.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from uni3d.bench.common import machine, replace_section, section_markers
from uni3d.errors import UsageError
from uni3d.io import save_json

TCNN_SOURCE = "git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch"
BEGIN, END = section_markers("gpu-check")


@dataclass(frozen=True)
class Step:
    """One step: a name, its command, its time limit in seconds, and whether the check needs it to pass."""

    name: str
    command: tuple[str, ...]
    limit_s: int
    required: bool = True


def steps(*, install: bool, docs: Path) -> list[Step]:
    """The check's steps (``install``: also install the CUDA extras first)."""
    py, uni3d = sys.executable, (sys.executable, "-m", "uni3d")
    pip = (py, "-m", "pip", "install", "--quiet")
    parity = ("tests/test_scene.py", "tests/test_distill_device.py", "-k", "tcnn or nerfacc or cuda or device")
    return [
        *(
            [
                Step("install nerfacc", (*pip, "nerfacc>=0.5.3"), 300, required=False),
                Step("install tinycudann", (*pip, "--no-build-isolation", TCNN_SOURCE), 900, required=False),
            ]
            if install
            else []
        ),
        Step("parity and device tests", (py, "-m", "pytest", "-q", "-rs", *parity), 600),
        Step(
            "bench sd-step (sd15, sd21, fp16)",
            (
                *uni3d,
                "bench",
                "sd-step",
                "--models",
                "sd15,sd21",
                "--dtype",
                "fp16",
                "--device",
                "cuda",
                "--docs",
                str(docs),
            ),
            900,
        ),  # fmt: skip
        Step("bench scene", (*uni3d, "bench", "scene", "--docs", str(docs)), 600),
    ]


def gpu_name() -> str | None:
    """The first CUDA device's name, ``None`` without one."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


Runner = Callable[..., subprocess.CompletedProcess]


def run_gpu_check(
    plan: Sequence[Step], docs: Path, *, runner: Runner = subprocess.run, gpu: str | None = None
) -> list[dict[str, Any]]:
    """Run ``plan`` (each step a process under its limit), write the results, return one row per step."""
    gpu = gpu if gpu is not None else gpu_name()
    if gpu is None:
        raise UsageError("no CUDA GPU here (torch.cuda.is_available() is False): uni3d check gpu needs an NVIDIA GPU")
    rows = []
    for step in plan:
        start = time.perf_counter()
        try:
            done = runner(list(step.command), capture_output=True, text=True, timeout=step.limit_s)
            rc, tail = done.returncode, (done.stdout + done.stderr)[-1500:]
        except subprocess.TimeoutExpired:
            rc, tail = 124, f"stopped after its limit of {step.limit_s} s"
        rows.append({**asdict(step), "rc": rc, "seconds": round(time.perf_counter() - start, 1), "tail": tail})
        print(f"{'ok  ' if rc == 0 else 'FAIL'} {step.name} ({rows[-1]['seconds']:.0f} s)", flush=True)
    info = {**machine(), "gpu": gpu}
    save_json(docs / "benchmarks" / "gpu_check.json", {"machine": info, "rows": rows})
    lines = [
        BEGIN,
        "## GPU acceptance (`uni3d check gpu`)",
        "",
        f"On {gpu}, {info['date']}. Each step's exit code and time; outputs in `docs/benchmarks/gpu_check.json`, the "
        "benchmarks' own numbers in their sections.",
        "",
        "| step | required | exit code | seconds |",
        "|---|---|---|---|",
        *[f"| {r['name']} | {'yes' if r['required'] else 'no'} | {r['rc']} | {r['seconds']:.0f} |" for r in rows],
        END,
    ]
    replace_section(docs / "benchmarks.md", "\n".join(lines))
    return rows
