"""The ``uni3d`` commands by name: the module that builds each one and the line ``uni3d --help`` shows for it.

The table lets the parser import only the module of the command being run (``uni3d --help`` imports none: it
answers without loading torch); each module takes its command's help line from here, so it is written once.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    module: str
    """Module whose ``add_commands(subparsers)`` registers the command."""
    help: str


COMMANDS: dict[str, Command] = {
    "check": Command("uni3d.cli.check", "numerical proofs of the method (METHOD.md section 6)"),
    "generate": Command(
        "uni3d.cli.text_to_3d", "text prompt -> 3D asset (GLB, OBJ, turntable video) by score distillation"
    ),
    "batch": Command(
        "uni3d.cli.text_to_3d", "generate every prompt of a file (resumable; a failing prompt never stops the batch)"
    ),
    "clean": Command("uni3d.cli.text_to_3d", "drop the checkpoints of finished runs (their assets stay)"),
    "toy": Command("uni3d.cli.toy", "one-step distillation of a ring of 8 Gaussians (about a minute on a CPU)"),
    "reconstruct": Command(
        "uni3d.cli.reconstruct",
        "fit the radiance field to views of a real mesh, export it, report Chamfer and held-out PSNR",
    ),
    "make-shapes-dataset": Command(
        "uni3d.cli.shapes_dataset",
        "render primitives in named colours from random views with captions (the embedded prior's data)",
    ),
    "train-prior": Command(
        "uni3d.cli.embedded_prior",
        "train the embedded prior (VAE, then UNet + text encoder) in Stable Diffusion's folder layout",
    ),
    "train-shape-classifier": Command(
        "uni3d.cli.embedded_prior", "train the shape/colour classifier that judges the prior's samples"
    ),
    "eval-prior": Command(
        "uni3d.cli.embedded_prior",
        "shape and colour accuracy of a prior's samples for fully specified prompts, and a sample sheet",
    ),
    "train-teacher": Command("uni3d.cli.images", "train the EDM teacher UNet on MNIST (resumable)"),
    "train-features": Command("uni3d.cli.images", "train the FID feature classifier on the MNIST held-out split"),
    "distill": Command(
        "uni3d.cli.images", "distill the teacher into a one-step generator with any loss preset (resumable)"
    ),
    "fid": Command(
        "uni3d.cli.images", "FID of sample images with NVlabs' Inception-v3 detector against EDM reference statistics"
    ),
    "distill-terms": Command(
        "uni3d.cli.images",
        "gradient norm of each expanded-form term (SIM, ratio motion, DI, FGM) at a run's checkpoint",
    ),
    "app": Command(
        "uni3d.cli.app", "Gradio web app: prompt -> live progress -> 3D viewer, video, downloads (127.0.0.1)"
    ),
}
"""Top-level commands (``bench`` is built by :mod:`uni3d.cli.main` from :data:`BENCHMARKS`)."""

BENCHMARKS: dict[str, Command] = {
    "toy": Command("uni3d.bench.toy", "all presets on the 2-D ring vs the teacher's Heun sampler"),
    "scene": Command("uni3d.bench.scene", "renderer rays/s (forward + backward): eager, compiled, cuda"),
    "images": Command(
        "uni3d.bench.images", "MNIST teacher at several NFE vs one-step students, same steps, mean ± sd over seeds"
    ),
    "images-runs": Command(
        "uni3d.bench.image_runs", "long distill runs vs the teacher at NFE 35 within a CPU budget -> docs/benchmarks.md"
    ),
    "shapes": Command("uni3d.bench.shapes", "text to 3D on the embedded prior: Chamfer, colour, diversity"),
    "composites": Command("uni3d.bench.composites", "two-part prompts in 3D against the true union; the Janus rate"),
    "coverage": Command("uni3d.bench.coverage", "3D outcomes of open prompts against the prior's own samples"),
    "fake-bias": Command("uni3d.bench.fake_bias", "text to 3D: fake-score residual against the score difference"),
    "teacher-jacobian": Command(
        "uni3d.bench.teacher_jacobian", "text to 3D: the guided teacher's Jacobian in the expanded-form gradient"
    ),
    "sd-step": Command("uni3d.bench.sd_step", "text-to-3D step time and memory at SD size vs its UNet calls"),
}
"""``uni3d bench WHAT``."""


def chosen(words: Sequence[str], depth: int = 0) -> str | None:
    """The command word at position ``depth`` among the non-option words of ``words`` (``None``: not given)."""
    positional = [w for w in words if not w.startswith("-")]
    return positional[depth] if len(positional) > depth else None


def register(
    subparsers: argparse._SubParsersAction, table: Mapping[str, Command], only: str | None, *, lazy: bool
) -> None:
    """Let the modules of ``table`` register their commands: with ``lazy``, only the module of ``only`` (none when
    ``only`` is not a command), the others listed by name and help line; without, every module."""
    modules = dict.fromkeys(c.module for name, c in table.items() if not lazy or name == only)
    for module in modules:
        importlib.import_module(module).add_commands(subparsers)
    for name, command in table.items():
        if name not in subparsers.choices:
            subparsers.add_parser(name, help=command.help)
