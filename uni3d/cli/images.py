"""``uni3d train-teacher``, ``uni3d train-features`` and ``uni3d distill``: one-step image distillation (MNIST offline,
EDM checkpoints and datasets where the user has them)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path

from uni3d.cli.commands import COMMANDS
from uni3d.cli.flags import Flag, add_flags, given, names
from uni3d.errors import UsageError
from uni3d.losses import PRESET_NAMES
from uni3d.tasks.images.data import DATASETS
from uni3d.tasks.images.distill_config import DistillConfig
from uni3d.tasks.images.distill_run import run_distill
from uni3d.tasks.images.features import FeatureTrainConfig, feature_record, save_feature_net, train_feature_net
from uni3d.tasks.images.image_data import DATA_HELP
from uni3d.tasks.images.inception_fid import DETECTOR_NAME, DETECTOR_URL, REFS_URL, inception_fid
from uni3d.tasks.images.recipes import RECIPES, check_recipe_files, get_recipe
from uni3d.tasks.images.teacher import TeacherConfig, train_teacher
from uni3d.tasks.images.terms import run_term_report

_T, _D, _F = TeacherConfig(), DistillConfig(), FeatureTrainConfig()
DISTILL_FLAGS: tuple[Flag, ...] = (
    ("steps", int, "total steps"),
    ("warmup_steps", int, "first steps that train only the fake score and ratio head"),
    ("batch_size", int, "batch size"),
    ("seed", int, "seed"),
    ("lr_generator", float, "generator learning rate"),
    ("lr_fake", float, "fake-score learning rate"),
    ("lr_ratio", float, "ratio-head learning rate"),
    ("sigma_init", float, "sigma of the generator's input"),
    ("gen_sigma", str, "generator noise levels: lognormal or rho (SiD's t ~ U[0, gen_t_max] on EDM's schedule)"),
    ("gen_t_max", float, "upper end of t for gen_sigma rho (SiD's tmax / 1000)"),
    ("gen_sigma_min", float, "generator-loss noise levels below this get weight 0"),
    ("ratio_width", int, "width of the ratio head"),
    ("ratio_clamp", float, "|log r| bound; beyond it the ratio is a constant (no motion terms)"),
    ("gan_weight", float, "weight of SiDA's adversarial generator term (the ratio head is its discriminator)"),
    ("fake_p_mean", float, "mean of ln sigma for the fake score's denoising loss"),
    ("fake_p_std", float, "std of ln sigma for the fake score's denoising loss"),
    ("adam_beta1", float, "Adam beta1 of all three optimizers"),
    ("ema", float, "EMA decay of the generator"),
    ("eval_samples", int, "samples per evaluation"),
    ("eval_every", int, "steps between evaluations"),
    ("sample_every", int, "steps between sample grids"),
    ("checkpoint_every", int, "steps between checkpoints"),
    ("device", str, "cpu or cuda (random numbers are drawn on the CPU either way)"),
)
"""``uni3d distill``'s settings flags: (DistillConfig field, type, help)."""


TEACHER_FLAGS: tuple[Flag, ...] = (
    ("steps", int, "total training steps"),
    ("batch_size", int, "batch size"),
    ("lr", float, "Adam learning rate"),
    ("decay_start", int, "step after which the lr decays linearly to zero (with --decay-steps)"),
    ("decay_steps", int, "steps of the final linear lr decay (0: constant lr)"),
    ("seed", int, "seed"),
    ("sample_every", int, "steps between sample grids"),
    ("checkpoint_every", int, "steps between checkpoints"),
    ("eval_every", int, "steps between FID scores of the EMA teacher (0: never)"),
    ("eval_nfe", int, "Heun NFE of the scored samples"),
    ("eval_samples", int, "samples per score"),
    ("features", str, "FID feature net: 'mnist', a file, or 'none'"),
)
FEATURE_FLAGS: tuple[Flag, ...] = (("steps", int, "steps"), ("batch_size", int, "batch size"), ("seed", int, "seed"))


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train-teacher``, ``train-features`` and ``distill`` on the top-level ``uni3d`` subparsers."""
    t = subparsers.add_parser(
        "train-teacher",
        help=COMMANDS["train-teacher"].help,
        description="Train an EDM-preconditioned class-conditional UNet on the MNIST training split. Running the "
        "same command again continues from OUT/checkpoint.pt; OUT/teacher.pt is the EMA teacher.",
    )
    t.add_argument("--dataset", choices=DATASETS, default="mnist", help="dataset (default mnist)")
    t.add_argument("--out", type=Path, required=True, help="run folder")
    add_flags(t, TEACHER_FLAGS, defaults=_T)
    t.add_argument("--resume", action="store_true", help="require OUT/checkpoint.pt (it is continued either way)")
    t.set_defaults(func=_train_teacher)

    f = subparsers.add_parser(
        "train-features",
        help=COMMANDS["train-features"].help,
        description="Train the small CNN whose penultimate features define FID; report its accuracy on the "
        "training split (never seen by it).",
    )
    f.add_argument("--out", type=Path, required=True, help="output file (e.g. assets/mnist_features.pt)")
    add_flags(f, FEATURE_FLAGS, defaults=_F)
    f.set_defaults(func=_train_features)

    d = subparsers.add_parser(
        "distill",
        help=COMMANDS["distill"].help,
        description="One-step distillation (SiD-style generator initialised from the teacher, online fake score, "
        "ratio head); sample grids, metrics.csv (FID, accuracy) and checkpoints in OUT; the same command resumes.",
    )
    d.add_argument(
        "--recipe",
        help=f"a published setting for EDM checkpoints, one of {', '.join(RECIPES)}; flags still override it "
        "(docs/image_distiller.md)",
    )
    d.add_argument(
        "--teacher",
        help="'mnist' (assets/; 'mnist-v1': the earlier one), a teacher.pt file or run folder, or an NVlabs EDM .pkl "
        "(SongUNet / DhariwalUNet) "
        f"(default {_D.teacher})",
    )
    d.add_argument("--data", help=f"real images: {DATA_HELP} (default {_D.data})")
    d.add_argument("--preset", help=f"loss preset; one of {', '.join(PRESET_NAMES)} (default {_D.preset})")
    d.add_argument("--out", type=Path, required=True, help="run folder")
    d.add_argument("--features", help=f"FID feature net: 'mnist', a file, or 'none' (default {_D.features})")
    add_flags(d, DISTILL_FLAGS, defaults=_D)
    d.add_argument(
        "--ratio-motion",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the expanded form's ratio-motion and DI terms; --no-ratio-motion holds r constant per sample "
        f"(default {'on' if _D.ratio_motion else 'off'})",
    )
    d.add_argument("--resume", action="store_true", help="require OUT/checkpoint.pt (it is continued either way)")
    d.add_argument("--json", action="store_true", help="print the last metrics row as JSON")
    d.set_defaults(func=_distill)
    _add_fid(subparsers)
    _add_terms(subparsers)


def _train_teacher(args: argparse.Namespace) -> int:
    cfg = replace(_T, dataset=args.dataset, **given(args, names(TEACHER_FLAGS)))
    run = train_teacher(cfg, args.out, resume=args.resume)
    loss = run.rows[-1]["loss"] if run.rows else float("nan")
    print(f"teacher: {run.step_count} steps, last loss {loss:.4f}, {run.nonfinite_steps} non-finite steps skipped")
    print(f"files in {args.out}/ (teacher.pt, checkpoint.pt, metrics.csv, samples/)")
    return 0


def _train_features(args: argparse.Namespace) -> int:
    cfg = replace(_F, **given(args, names(FEATURE_FLAGS)))
    net, acc = train_feature_net(cfg)
    save_feature_net(args.out, net, feature_record(cfg, acc))
    print(f"feature net: accuracy {acc:.4f} on the training split (4,000 digits it never saw); saved {args.out}")
    return 0


def _distill(args: argparse.Namespace) -> int:
    recipe = None if args.recipe is None else get_recipe(args.recipe)
    values = {} if recipe is None else recipe.config_values()
    values.update(given(args, ("teacher", "data", "preset", "features", *names(DISTILL_FLAGS), "ratio_motion")))
    cfg = DistillConfig(**values)
    if recipe is not None:
        check_recipe_files(recipe, cfg.teacher, cfg.data)
    row = run_distill(cfg, args.out, resume=args.resume, progress=not args.json)
    if args.json:
        print(json.dumps({**row, "out": str(args.out)}, indent=2))
    else:
        print("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
        print(f"files in {args.out}/ (generator.pt, checkpoint.pt, metrics.csv, samples/)")
    return 0


def _add_fid(subparsers: argparse._SubParsersAction) -> None:
    """``uni3d fid SAMPLES --detector inception-2015-12-05.pt --ref REF.npz`` (:mod:`uni3d.tasks.images.inception_fid`)."""
    f = subparsers.add_parser(
        "fid",
        help=COMMANDS["fid"].help,
        description="FID of SAMPLES (a folder of PNGs or an .npz of uint8 NHWC images) in the feature space of "
        f"NVlabs' TorchScript Inception-v3 ({DETECTOR_URL}) against reference statistics in EDM's fid-refs format "
        f"(mu, sigma; e.g. {REFS_URL}cifar10-32x32.npz).",
    )
    f.add_argument("samples", type=Path, help="folder of PNG images or .npz of uint8 [N, H, W, C] images")
    f.add_argument("--detector", type=Path, default=Path(DETECTOR_NAME), help=f"TorchScript detector ({DETECTOR_NAME})")
    f.add_argument("--ref", type=Path, required=True, help="reference statistics .npz with mu and sigma")
    f.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    f.add_argument("--json", action="store_true", help="print the result as JSON")
    f.set_defaults(func=_fid)


def _fid(args: argparse.Namespace) -> int:
    fid = inception_fid(args.samples, args.detector, args.ref, args.device)
    if args.json:
        print(json.dumps({"fid": fid, "samples": str(args.samples), "ref": str(args.ref)}))
    else:
        print(f"FID {fid:.4f} ({args.samples} against {args.ref})")
    return 0


def _add_terms(subparsers: argparse._SubParsersAction) -> None:
    """``uni3d distill-terms RUN`` (:mod:`uni3d.tasks.images.terms`)."""
    t = subparsers.add_parser(
        "distill-terms",
        help=COMMANDS["distill-terms"].help,
        description="Loads RUN/checkpoint.pt of a uni3d distill run with a uni-<f> preset, draws one batch as the "
        "generator step does, and prints the mean per-sample gradient norm of each weighted term w.r.t. the "
        "generator's output (they sum to the loss's gradient), with the ratio estimate's range.",
    )
    t.add_argument("run", type=Path, help="a uni3d distill run folder")
    t.add_argument("--batch-size", type=int, default=64, help="samples to average over (default 64)")
    t.add_argument("--seed", type=int, default=0, help="seed of the batch (default 0)")
    t.add_argument("--json", action="store_true", help="print the report as JSON")
    t.set_defaults(func=_terms)


def _terms(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    report = run_term_report(args.run, args.batch_size, args.seed)
    print(json.dumps(asdict(report), indent=2) if args.json else "\n".join(report.lines()))
    return 0
