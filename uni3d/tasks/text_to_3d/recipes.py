"""Named recipes: the settings a prior and a method need, so that a user gets the field's working values unasked.

A recipe is a partial settings mapping laid under what the user gives (a config file, flags, the app's form):
any setting given still wins. The prior decides the default (:func:`default_recipe`): the embedded prior's
``embedded`` recipe is empty, so its runs are today's defaults bit for bit; a Stable Diffusion prior gets the
recipe of its method (``sd-sds`` for SDS-like presets, ``sd-vsd`` for VSD and those with a frozen-prior fake score,
``sd-uni`` for the presets with a learned fake score and a ratio). Each value's source (threestudio's
``dreamfusion-sd`` and ``prolificdreamer`` configs, the DreamFusion and ProlificDreamer papers), and where uni3d
departs from it, is tabled in docs/text_to_3d.md ("Recipes").
"""

from __future__ import annotations

from typing import Any

from uni3d.errors import UsageError

EMBEDDED = "embedded"

_SD_COMMON: dict[str, Any] = {
    "render_size": 64,
    "t_min": 0.02,
    "t_max_start": 0.98,
    "elevation_deg": [-10.0, 45.0],
    "azimuth_deg": [-180.0, 180.0],
    "distance": [1.0, 1.5],
    "fov_deg": [40.0, 70.0],
    "light": "camera",
    "background": "mlp",
    "field": {"blob_density": 10.0, "blob_radius": 0.5},
    "lr": 0.01,
    "lambda_normal_smooth": 0.0,
}

RECIPES: dict[str, dict[str, Any]] = {
    EMBEDDED: {},
    "sd-sds": {
        **_SD_COMMON,
        "steps": 10000,
        "guidance_scale": 100.0,
        "t_max_end": 0.98,
        "elevation_deg": [-10.0, 90.0],
        "distance": [1.5, 2.0],
        "albedo_until": 0.2,
        "textureless_prob": 0.375,
        "lambda_sparsity": 1.0,
        "lambda_orient": 10.0,
    },
    "sd-vsd": {
        **_SD_COMMON,
        "steps": 25000,
        "guidance_scale": 7.5,
        "t_max_end": 0.5,
        "anneal_until": 0.2,
        "render_milestone": [0.2, 512],
        "shading": "albedo",
        "lambda_sparsity": 10.0,
        "lambda_orient": 0.0,
        "lr_lora": 1e-4,
    },
}
RECIPES["sd-uni"] = {**RECIPES["sd-vsd"]}
"""``sd-uni``: the ProlificDreamer recipe, whose LoRA fake score the ``uni-*`` presets share (the ratio head keeps
its own defaults, which have no published SD value)."""

_SDS_LIKE = ("sds", "nfsd", "sdi", "cfd", "lmc-sds")
_VSD_LIKE = ("vsd", "asd", "dsd")


def default_recipe(preset: str, *, embedded: bool) -> str:
    """The recipe a run gets unless it names one: ``embedded`` for an embedded prior, else by preset."""
    if embedded:
        return EMBEDDED
    key = (preset or "").strip().lower()
    if key in _SDS_LIKE:
        return "sd-sds"
    if key in _VSD_LIKE:
        return "sd-vsd"
    return "sd-uni"


def recipe_settings(name: str) -> dict[str, Any]:
    """The settings of recipe ``name``; an unknown name is a one-line error listing the valid ones."""
    if name not in RECIPES:
        raise UsageError(f"unknown recipe {name!r}; valid: {', '.join(RECIPES)}")
    return RECIPES[name]
