"""The page's inputs -> a validated :class:`GenerateConfig`; every bad value is one :class:`UsageError` line.

Ranges are those of the page's sliders, checked again here because the HTTP API takes any number. Prompts are
limited to :data:`MAX_PROMPT_CHARS` characters: CLIP reads at most 77 tokens (about 300 characters of English),
the rest would be silently cut.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from uni3d.errors import UsageError
from uni3d.tasks.text_to_3d.config import ADDED_LATER, EMBEDDED_PRIOR, MAX_RENDER_SIZE, GenerateConfig

MAX_PROMPT_CHARS = 300
"""Longest prompt (and negative prompt) accepted: CLIP's 77-token context holds about this many characters."""


@dataclass(frozen=True)
class Range:
    """An inclusive numeric range for one page input."""

    low: float
    high: float

    def __str__(self) -> str:
        """``"1 to 5000"`` (whole numbers written out in full)."""
        return " to ".join(str(int(x)) if x == int(x) else f"{x:g}" for x in (self.low, self.high))

    def check(self, label: str, value: float | None, integer: bool = True) -> float:
        """``value`` if it lies in the range (and is a whole number when ``integer``), else a one-line error."""
        if value is None or isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise UsageError(f"{label} must be a number from {self}, got {value!r}")
        if integer and value != int(value):
            raise UsageError(f"{label} must be a whole number, got {value!r}")
        if not self.low <= value <= self.high:
            raise UsageError(f"{label} must be from {self}, got {value:g}")
        return int(value) if integer else float(value)


RANGES: dict[str, Range] = {
    "steps": Range(1, 5000),
    "particles": Range(1, 8),
    "seed": Range(0, 2**31 - 1),
    "guidance_scale": Range(0, 100),
    "render_size": Range(0, 512),  # 0: the prior's image side (at most 128)
    "preview_every": Range(1, 1000),
    "mc_resolution": Range(16, 256),
    "texture_size": Range(16, 2048),
    "turntable_frames": Range(2, 120),
    "turntable_size": Range(16, 512),
}
"""Accepted values of the numeric inputs (the sliders use the same bounds)."""


_D = GenerateConfig(prompt="-")


@dataclass(frozen=True)
class AppInputs:
    """What the page sends for one run (the API takes the same fields); defaults are ``uni3d generate``'s, but
    previews every 10 steps so the page shows progress every few seconds."""

    prompt: str
    negative_prompt: str = ""
    prior: str = ""
    preset: str = _D.preset
    steps: float = _D.steps
    seed: float = _D.seed
    guidance_scale: float = _D.guidance_scale
    render_size: float = 0
    preview_every: float = 10
    mc_resolution: float = _D.export.mc_resolution
    texture_size: float = _D.export.texture_size
    turntable_frames: float = _D.export.turntable_frames
    turntable_size: float = _D.export.turntable_size
    particles: float = _D.particles


EXPORT_INPUTS = ("mc_resolution", "texture_size", "turntable_frames", "turntable_size")
"""The page's inputs that are export settings (``config.export``)."""
INPUT_NAMES: tuple[str, ...] = tuple(f.name for f in fields(AppInputs))
"""The page's inputs in the one order the page's components, the API's parameters and :class:`AppInputs` share."""


def build_config(inputs: AppInputs) -> GenerateConfig:
    """The run's config; an empty or overlong prompt, an out-of-range number or an unknown preset is a one-line
    :class:`UsageError` (the rest of the validation is :class:`GenerateConfig`'s own)."""
    prompt = " ".join((inputs.prompt or "").split())
    negative = " ".join((inputs.negative_prompt or "").split())
    if not prompt:
        raise UsageError("the prompt is empty; type what to make, e.g. 'a red cube'")
    for label, text in (("prompt", prompt), ("negative prompt", negative)):
        if len(text) > MAX_PROMPT_CHARS:
            raise UsageError(
                f"the {label} has {len(text)} characters; at most {MAX_PROMPT_CHARS} (CLIP reads 77 tokens)"
            )
    n = {
        name: RANGES[name].check(name.replace("_", " "), getattr(inputs, name), name != "guidance_scale")
        for name in RANGES
    }
    settings: dict[str, Any] = {
        "prompt": prompt,
        "negative_prompt": negative,
        "preset": inputs.preset or "sds",
        "steps": n["steps"],
        "seed": n["seed"],
        "guidance_scale": n["guidance_scale"],
        "render_size": n["render_size"] or None,
        "preview_every": n["preview_every"],
        "particles": n["particles"],
        "export": {name: n[name] for name in EXPORT_INPUTS},
    }
    if inputs.prior:
        settings["prior"] = inputs.prior
    if inputs.prior and inputs.prior != EMBEDDED_PRIOR:  # the form's untouched defaults leave the prior's recipe be
        for name in ("steps", "guidance_scale"):
            if settings[name] == getattr(_D, name):
                del settings[name]
    return GenerateConfig.from_dict(settings)


def inputs_of_run(config: dict[str, Any], metrics: dict[str, Any]) -> AppInputs | None:
    """The form that makes the run of ``config`` and ``metrics`` (its ``config.json`` and ``metrics.json``) again:
    the inverse of :func:`build_config` for the fields the page has (a render size that was the prior's own goes
    back to 0, "the prior's"); ``None`` for a config without a prompt."""
    if not isinstance(config.get("prompt"), str):
        return None
    export = config.get("export") or {}
    default = AppInputs(prompt="")
    values = {name: config.get(name, getattr(default, name)) for name in INPUT_NAMES}
    values.update({name: export.get(name, getattr(default, name)) for name in EXPORT_INPUTS})
    own = min(int(metrics.get("prior_image_size") or 0), MAX_RENDER_SIZE)
    values["render_size"] = 0 if config.get("render_size") in (None, own) else config["render_size"]
    return AppInputs(**values)


_IGNORED = ("device", "preview_every", "checkpoint_every", "snapshot_every")
"""Settings that do not change the result, left out of the run folder's name."""


def run_folder(out: Path, cfg: GenerateConfig) -> Path:
    """``out / "<prompt slug>-<8 hex>"``, the hex a hash of every setting that shapes the result: the same request
    finds its finished (or cancelled, then resumed) run again, other settings get their own folder."""
    slug = re.sub(r"[^a-z0-9]+", "-", cfg.prompt.lower()).strip("-")[:50] or "prompt"
    settings = {
        k: v
        for k, v in cfg.as_dict().items()
        if k not in _IGNORED and not (k in ADDED_LATER and v in (None, ADDED_LATER[k]))
    }
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    return Path(out) / f"{slug}-{digest}"
