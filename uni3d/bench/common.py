"""What every benchmark shares: the machine description and the in-place update of docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import platform
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from uni3d.io import atomic_write


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (or what ``platform`` knows)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.processor() or "unknown CPU"


def machine() -> dict[str, object]:
    """CPU, cores, torch threads, versions, GPU (if any), the UTC date and the 1-minute load average.

    The load average is taken when called (the start or the end of a benchmark): timings are only comparable
    between runs on an otherwise idle machine, and this says whether it was.
    """
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def section_markers(name: str) -> tuple[str, str]:
    """The ``<!-- name:begin -->`` / ``<!-- name:end -->`` markers of one benchmark's section."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_section(path: Path, section: str) -> None:
    """Put ``section`` (which starts and ends with its markers) in place of the same-named section of ``path``.

    Appended when the file has no such section; the file is created (with a title) when missing; other
    sections are kept byte for byte. Written atomically.
    """
    match = re.match(r"<!-- ([\w-]+):begin -->", section)
    if match is None:
        raise ValueError("a benchmark section must start with its <!-- name:begin --> marker")
    begin, end = section_markers(match.group(1))
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    atomic_write(path, text.rstrip("\n") + "\n")


def previous_rows(json_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The finished rows and the invocations a resumable benchmark saved in ``json_path`` (none when absent)."""
    if not json_path.is_file():
        return [], []
    saved = json.loads(json_path.read_text())
    return [r for r in saved.get("rows", []) if r.get("status") == "done"], list(saved.get("invocations", []))
