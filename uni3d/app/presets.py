"""One line per preset for the app's menu: what it optimises, when to pick it, and what it costs beside ``sds``.

The cost is said by what a step trains or calls besides the prior's one guided pass (a LoRA fake score, a ratio
head, extra prior passes), not by seconds, which depend on the machine (measured in ``docs/benchmarks.md``).
"""

from __future__ import annotations

from uni3d.tasks.text_to_3d.config import TEXT_TO_3D_PRESETS

_DIVERGENCES = {
    "rkl": "reverse KL (mode-seeking)",
    "fkl": "forward KL (mass-covering)",
    "jeffreys": "Jeffreys (both KLs)",
    "js": "Jensen-Shannon",
    "chi2": "chi-squared",
    "hellinger": "squared Hellinger",
}
_LEARNED = "+ a LoRA fake score"
_RATIO = _LEARNED + ", a ratio head"
_NOTES = {
    "sds": "Score Distillation Sampling: the prior's most likely answer, sharp; the cheapest (the default)",
    "vsd": f"Variational Score Distillation: the prior's distribution (varied answers with particles); {_LEARNED}",
    "di": f"Diff-Instruct: reverse KL, integral form; {_LEARNED}",
    "sid": f"Score identity Distillation (alpha 1.2); {_LEARNED}",
    "sim": f"Score Implicit Matching (SiD with alpha 1); {_LEARNED}",
    "nfsd": "Noise-Free Score Distillation: sds without its noise term, for low guidance; as cheap as sds",
    "asd": "Asynchronous Score Distillation: the prior at a later time as fake score; + one prior pass",
    "sdi": "Score Distillation via Inversion: the render's own DDIM-inverted noise; + a few prior passes",
    "dsd": "Diverse Score Distillation: a seeded noise path per particle (varied answers); + a few prior passes",
    "cfd": "Consistent Flow Distillation: noise fixed on the object's surface; + a noise-field render",
    "lmc-sds": "SDS with a learned manifold corrective: sds without its blur-seeking part; + a small corrective net",
}


def preset_note(name: str) -> str:
    """The menu line of preset ``name`` (every name in :data:`TEXT_TO_3D_PRESETS` has one)."""
    family, _, divergence = name.partition("-")
    if family == "uni":
        return f"Uni-Instruct, {_DIVERGENCES[divergence]}: the full expanded gradient; {_RATIO}"
    if family == "fdistill":
        return f"f-distill, {_DIVERGENCES[divergence]}: ratio-weighted score difference; {_RATIO}"
    return _NOTES[name]


def preset_choices() -> list[tuple[str, str]]:
    """``(label, preset)`` for the menu: the name, then its line."""
    return [(f"{name}: {preset_note(name)}", name) for name in TEXT_TO_3D_PRESETS]
