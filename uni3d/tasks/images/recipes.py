"""Named distillation recipes for NVlabs' EDM checkpoints (``uni3d distill --recipe NAME``).

Each recipe is the published setting of one reference run, translated into :class:`DistillConfig` fields: SiD's
``run_sid.sh`` (Zhou et al., Score identity Distillation) and Uni-Instruct's ``run_uni_instruct.sh`` (built on
SiDA, SiD with an adversarial term). A recipe sets defaults only: any flag given on the command line still
wins, and the saved ``config.json`` holds the recipe's name and every resolved value. Sources, the paper's
FID for each and where uni3d differs from the reference code are tabulated in ``docs/image_distiller.md``.

Translations: durations in images become steps (``images / batch``); EMA half-lives in images become a decay
per step, ``0.5 ** (batch / half_life)``; SiD's generator times ``t ~ U[0, tmax / 1000]`` on EDM's rho-7
schedule are ``gen_sigma='rho'`` with ``gen_t_max = tmax / 1000`` and no cut below; the fake score's noise is
EDM's log-normal ``(-1.2, 1.2)``; Adam's ``beta1`` is 0 as in both codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uni3d.errors import UsageError


def ema_per_step(half_life_images: float, batch: int) -> float:
    """Per-step EMA decay whose half-life is ``half_life_images`` images at ``batch`` images per step."""
    return 0.5 ** (batch / half_life_images)


@dataclass(frozen=True)
class DistillRecipe:
    """One published run: its teacher and data files, settings, process count and the FID its paper reports."""

    name: str
    summary: str
    teacher: str
    data: str
    settings: dict[str, Any]
    reported_fid: float
    source: str
    processes: int = 8
    dataset_url: str = "https://github.com/NVlabs/edm#preparing-datasets"
    differences: tuple[str, ...] = field(default_factory=tuple)

    def config_values(self) -> dict[str, Any]:
        """The :class:`DistillConfig` fields this recipe sets (teacher, data and recipe name included)."""
        return {"recipe": self.name, "teacher": self.teacher, "data": self.data, **self.settings}

    def torchrun(self, out: str = "runs/") -> str:
        """The launch line on ``processes`` GPUs."""
        return (
            f"torchrun --standalone --nproc_per_node {self.processes} -m uni3d distill --recipe {self.name} "
            f"--device cuda --out {out}{self.name}"
        )


EDM_PICKLES = "https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/"
_SID_COMMON: dict[str, Any] = {
    "preset": "sid",
    "sigma_init": 2.5,
    "gen_sigma": "rho",
    "gen_t_max": 0.8,
    "gen_sigma_min": 0.0,
    "fake_p_mean": -1.2,
    "fake_p_std": 1.2,
    "adam_beta1": 0.0,
    "features": "none",
}
_CIFAR = {"batch_size": 256, "lr_generator": 1e-5, "lr_fake": 1e-5, "lr_ratio": 1e-5, "ema": ema_per_step(500e3, 256)}
_IMAGENET = {
    "batch_size": 8192,
    "lr_generator": 4e-6,
    "lr_fake": 4e-6,
    "lr_ratio": 4e-6,
    "ema": ema_per_step(2e6, 8192),
}
_SIDA = {"gan_weight": 0.01}
_SHARED_DIFFERENCES = (
    "fp32 everywhere (ImageNet-64 runs fp16 in the reference code)",
    "EMA warm-up: min(decay, (n + 1) / (n + 10)) after n steps, not SiD's half-life ramp-up of 0.05",
    "the generator's gradient norm is clipped at grad_clip (10); SiD replaces non-finite gradients instead",
    "loss scales (SiD's ls 1, lsg 100) are left out: under Adam they only shift its epsilon",
)
_PAPER_FID = "the FID is the paper's for this dataset; the code does not say which of its runs gave it"
_SIDA_DIFFERENCES = (
    "the discriminator is the ratio head on the fake score's detached encoder features (SiDA also trains the "
    "shared encoder with the discriminator loss, weight lsd 1)",
    "the divergence's own gradient is the expanded form of METHOD.md from the first generator step; the reference "
    "code runs plain SiD until 200k images and derives its density ratio from the BCE loss value",
)

RECIPES: dict[str, DistillRecipe] = {
    r.name: r
    for r in (
        DistillRecipe(
            "sid-cifar10-uncond",
            "SiD, alpha 1.2, CIFAR-10 unconditional (data-free)",
            "edm-cifar10-32x32-uncond-vp.pkl",
            "none",
            {**_SID_COMMON, **_CIFAR, "steps": 500_000_000 // 256},
            1.923,
            "mingyuanzhou/SiD run_sid.sh, sid_train.py (500 Mimg)",
            differences=_SHARED_DIFFERENCES,
        ),
        DistillRecipe(
            "sid-cifar10-cond",
            "SiD, alpha 1.2, CIFAR-10 class-conditional (data-free)",
            "edm-cifar10-32x32-cond-vp.pkl",
            "none",
            {**_SID_COMMON, **_CIFAR, "steps": 800_000_000 // 256},
            1.710,
            "mingyuanzhou/SiD run_sid.sh, sid_train.py (800 Mimg)",
            differences=_SHARED_DIFFERENCES,
        ),
        DistillRecipe(
            "sid-imagenet64-cond",
            "SiD, alpha 1.2, ImageNet 64x64 class-conditional (data-free)",
            "edm-imagenet-64x64-cond-adm.pkl",
            "none",
            {**_SID_COMMON, **_IMAGENET, "steps": 1_000_000_000 // 8192},
            1.524,
            "mingyuanzhou/SiD run_sid.sh, sid_train.py (1000 Mimg)",
            differences=_SHARED_DIFFERENCES,
        ),
        DistillRecipe(
            "uni-cifar10-uncond",
            "Uni-Instruct, forward KL ('Forward-Clean': ratio-weighted, no adversarial term), CIFAR-10 unconditional",
            "edm-cifar10-32x32-uncond-vp.pkl",
            "cifar10-32x32.zip",
            {**_SID_COMMON, **_CIFAR, "preset": "uni-fkl", "steps": 300_000_000 // 256, "warmup_steps": 100_000 // 256},
            1.46,
            "a-little-hoof/Uni_Instruct run_uni_instruct.sh 'cifar10-uncond' (300 Mimg)",
            differences=(*_SHARED_DIFFERENCES, *_SIDA_DIFFERENCES, _PAPER_FID),
        ),  # fmt: skip
        DistillRecipe(
            "uni-cifar10-cond",
            "Uni-Instruct's script: f-distill Jensen-Shannon with SiDA's adversarial term, CIFAR-10 class-conditional",
            "edm-cifar10-32x32-cond-vp.pkl",
            "cifar10-32x32.zip",
            {
                **_SID_COMMON,
                **_CIFAR,
                **_SIDA,
                "preset": "fdistill-js",
                "steps": 300_000_000 // 256,
                "warmup_steps": 100_000 // 256,
            },
            1.38,
            "a-little-hoof/Uni_Instruct run_uni_instruct.sh 'cifar10-cond' (300 Mimg)",
            differences=(
                *_SHARED_DIFFERENCES,
                *_SIDA_DIFFERENCES,
                _PAPER_FID,
                "no variance reduction (the script divides the batch's ratios by their sum)",
            ),
        ),  # fmt: skip
        DistillRecipe(
            "uni-imagenet64-cond",
            "Uni-Instruct, Pearson chi-square with SiDA's adversarial term, ImageNet 64x64 class-conditional",
            "edm-imagenet-64x64-cond-adm.pkl",
            "imagenet-64x64.zip",
            {
                **_SID_COMMON,
                **_IMAGENET,
                **_SIDA,
                "preset": "uni-chi2",
                "steps": 300_000_000 // 8192,
                "warmup_steps": 100_000 // 8192,
            },
            1.02,
            "a-little-hoof/Uni_Instruct run_uni_instruct.sh 'imagenet64-cond' (300 Mimg)",
            differences=(
                *_SHARED_DIFFERENCES,
                *_SIDA_DIFFERENCES,
                _PAPER_FID,
                "no dropout (the script trains with 0.1)",
            ),
        ),  # fmt: skip
    )
}


def get_recipe(name: str) -> DistillRecipe:
    """The recipe ``name``; a one-line error listing the valid ones otherwise."""
    if name not in RECIPES:
        raise UsageError(f"unknown distill recipe {name!r}; valid: {', '.join(RECIPES)}")
    return RECIPES[name]


def check_recipe_files(recipe: DistillRecipe, teacher: str, data: str) -> None:
    """One-line errors naming where to get the recipe's teacher and dataset when they are not on disk (only for
    the files the recipe names: a teacher or data given on the command line is checked where it is loaded)."""
    if teacher == recipe.teacher and not Path(teacher).is_file():
        raise UsageError(
            f"recipe {recipe.name} distills EDM's {teacher}: download {EDM_PICKLES}{teacher} into this folder, "
            "or pass --teacher FILE"
        )
    if data == recipe.data and data != "none" and not Path(data).exists():
        raise UsageError(
            f"recipe {recipe.name} reads real images from {data}: make it with EDM's dataset_tool.py "
            f"({recipe.dataset_url}), or pass --data PATH"
        )
