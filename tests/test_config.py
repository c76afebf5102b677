"""The one settings loader: every task's config rejects unknown keys and wrong types in one line, and reads back
what it saved."""

from __future__ import annotations

from pathlib import Path

import pytest

from uni3d.config import build_config, read_config_file
from uni3d.errors import UsageError
from uni3d.models.edm.unet import UNetConfig
from uni3d.tasks.images.distill_config import DistillConfig
from uni3d.tasks.images.teacher import TeacherConfig
from uni3d.tasks.text_to_3d.config import GenerateConfig
from uni3d.tasks.toy.config import ToyConfig

CONFIGS = [
    (ToyConfig, {}, "toy"),
    (DistillConfig, {}, "distill"),
    (TeacherConfig, {}, "teacher"),
    (GenerateConfig, {"prompt": "a red cube"}, "generate"),
]


@pytest.mark.parametrize(("kind", "base", "where"), CONFIGS)
def test_unknown_keys_and_wrong_types_are_one_line_errors(kind: type, base: dict, where: str) -> None:
    with pytest.raises(UsageError, match=f"unknown {where} setting") as err:
        kind.from_dict({**base, "no_such_setting": 1})
    assert "\n" not in str(err.value)
    with pytest.raises(UsageError, match=f"{where} setting 'seed' must be an integer"):
        kind.from_dict({**base, "seed": "zero"})


@pytest.mark.parametrize(("kind", "base", "where"), CONFIGS)
def test_a_saved_config_reads_back_equal(kind: type, base: dict, where: str) -> None:
    cfg = kind.from_dict(base)
    assert kind.from_dict(cfg.as_dict() if hasattr(cfg, "as_dict") else base) == cfg


def test_nested_settings_lists_and_partial_mappings() -> None:
    cfg = build_config(TeacherConfig, {"unet": {"channels": [8, 16], "num_classes": 10}}, "teacher")
    assert cfg.unet == UNetConfig(channels=(8, 16), num_classes=10)  # the list became the tuple, the rest defaults
    with pytest.raises(UsageError, match=r"unknown teacher\.unet setting\(s\) chanels"):
        build_config(TeacherConfig, {"unet": {"chanels": [8]}}, "teacher")
    assert build_config(DistillConfig, {"lr_generator": 1}, "distill").lr_generator == 1.0  # an integer for a float


def test_config_files(tmp_path: Path) -> None:
    good, bad, listed = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml"
    good.write_text("steps: 5\nfit:\n  steps: 7\n")
    bad.write_text("steps: [5\n")
    listed.write_text("- 1\n- 2\n")
    assert ToyConfig.from_dict(read_config_file(good, "toy")).fit.steps == 7
    with pytest.raises(UsageError, match="cannot read toy config"):
        read_config_file(bad, "toy")
    with pytest.raises(UsageError, match="must hold a mapping"):
        read_config_file(listed, "toy")
    with pytest.raises(UsageError, match="cannot read toy config"):
        read_config_file(tmp_path / "missing.yaml", "toy")
