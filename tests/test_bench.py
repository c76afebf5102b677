"""Benchmark plumbing: the machine record, docs sections, and a tiny scene benchmark run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uni3d.bench import scene
from uni3d.bench.common import machine, replace_section, section_markers


def test_machine_record_has_what_a_reader_needs() -> None:
    info = machine()
    for key in ("cpu", "cores", "torch_threads", "torch", "date", "load_average_1min"):
        assert info[key] not in (None, "")


def test_sections_are_replaced_by_name_and_others_kept(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    a0, a1 = section_markers("a")
    b0, b1 = section_markers("b")
    replace_section(doc, f"{a0}\nfirst a\n{a1}")
    replace_section(doc, f"{b0}\nb\n{b1}")
    replace_section(doc, f"{a0}\nsecond a\n{a1}")
    text = doc.read_text()
    assert text.startswith("# Benchmarks") and text.count(a0) == 1 and text.count(b0) == 1
    assert "second a" in text and "first a" not in text and text.index(a0) < text.index(b0)
    with pytest.raises(ValueError):
        replace_section(doc, "no markers")


def test_scene_benchmark_measures_and_writes(tmp_path: Path) -> None:
    row = scene.rays_per_second("torch", False, 16, 2)
    assert row["rays_per_s"] > 0 and row["samples_per_ray"] > 0
    rows = [{"case": "torch eager", "size": 16, **row}]
    scene._write(tmp_path, rows, machine())
    saved = json.loads((tmp_path / "benchmarks" / "scene.json").read_text())
    assert saved["rows"][0]["rays_per_s"] == row["rays_per_s"]
    assert "16x16" in (tmp_path / "benchmarks.md").read_text()


def test_scene_compile_speedup_says_when_we_lose(tmp_path: Path) -> None:
    rows = [
        {"case": "torch eager", "size": 64, "rays_per_s": 100.0, "seconds_per_step": 1.0, "samples_per_ray": 2.0},
        {"case": "torch compiled", "size": 64, "rays_per_s": 50.0, "seconds_per_step": 2.0, "samples_per_ray": 2.0},
        {"case": "torch eager", "size": 128, "rays_per_s": 100.0, "seconds_per_step": 1.0, "samples_per_ray": 2.0},
        {"case": "torch compiled", "size": 128, "rays_per_s": 300.0, "seconds_per_step": 0.3, "samples_per_ray": 2.0},
        {"case": "torch eager", "size": 256, "rays_per_s": 100.0, "seconds_per_step": 1.0, "samples_per_ray": 2.0},
    ]
    scene._write(tmp_path, rows, machine())
    saved = json.loads((tmp_path / "benchmarks" / "scene.json").read_text())
    assert saved["compile_speedup"] == {"64": 0.5, "128": 3.0}  # 256 has no compiled row: no ratio
