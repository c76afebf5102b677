"""``uni3d train-prior``, ``uni3d train-shape-classifier``, ``uni3d eval-prior``: make and measure the embedded prior.

The diffusers-backed modules are imported inside the handlers, so ``uni3d --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from uni3d.cli.commands import COMMANDS
from uni3d.errors import UsageError

_TRAIN_DEFAULTS = {"steps": 4000, "vae_steps": 600, "batch_size": 64, "seed": 0}


def _threads(n: int | None) -> None:
    """Set torch's intra-op threads if asked (on a shared, oversubscribed CPU, 1 is often fastest)."""
    if n is None:
        return
    if not 1 <= n <= 256:
        raise UsageError(f"--threads must be 1-256, got {n}")
    torch.set_num_threads(n)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register the three commands on the top-level ``uni3d`` subparsers."""
    p = subparsers.add_parser(
        "train-prior",
        help=COMMANDS["train-prior"].help,
        description="Train a small latent diffusion model on a shapes dataset (uni3d make-shapes-dataset): the VAE "
        "first, then the UNet and CLIP text encoder with the DDPM loss. Checkpoints, metrics.csv and sample grids go "
        "to --out; repeating the command resumes from the checkpoint (a larger --steps extends a finished run). The "
        "final pipeline (diffusers save_pretrained layout) goes to --export (default OUT/pipeline).",
    )
    p.add_argument("--dataset", type=Path, required=True, help="shapes dataset (.npz)")
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoint, metrics.csv, samples/)")
    p.add_argument("--export", type=Path, default=None, help="where to save the final pipeline (default OUT/pipeline)")
    p.add_argument("--steps", type=int, default=_TRAIN_DEFAULTS["steps"], help="diffusion steps (default 4000)")
    p.add_argument("--vae-steps", type=int, default=_TRAIN_DEFAULTS["vae_steps"], help="VAE steps (default 600)")
    p.add_argument("--batch-size", type=int, default=_TRAIN_DEFAULTS["batch_size"], help="diffusion batch (default 64)")
    p.add_argument("--seed", type=int, default=_TRAIN_DEFAULTS["seed"], help="seed (default 0)")
    p.add_argument("--sample-every", type=int, default=250, help="sample grid every N diffusion steps (default 250)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="checkpoint every N steps (default 100)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument(
        "--snr-floor",
        type=float,
        default=0.0,
        help="lowest x0-space loss weight (Min-SNR's is SNR, near 0 at high noise); 1 makes the UNet learn to read "
        "the camera words of an angles dataset (default 0: Min-SNR)",
    )
    p.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="fine-tune this saved pipeline (e.g. assets/priors/shapes) for --steps more diffusion steps; no VAE phase",
    )
    p.add_argument(
        "--width",
        type=int,
        default=32,
        help="text encoder and UNet width, a multiple of 16 (the UNet's levels get WIDTH and 2 x WIDTH channels); "
        "ignored with --init-from (default 32)",
    )
    p.set_defaults(func=_train_prior)

    c = subparsers.add_parser(
        "train-shape-classifier",
        help=COMMANDS["train-shape-classifier"].help,
        description="Train a small CNN with shape and colour heads on a shapes dataset's images and ground-truth "
        "labels (and layout and second-part heads when the dataset has composites); the held-out accuracies are "
        "printed and saved with the weights.",
    )
    c.add_argument("--dataset", type=Path, required=True, help="shapes dataset (.npz)")
    c.add_argument("--out", type=Path, required=True, help="output file (.pt)")
    c.add_argument("--steps", type=int, default=600, help="training steps (default 600)")
    c.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    c.add_argument("--width", type=int, default=16, help="channels of the first stage, a multiple of 8 (default 16)")
    c.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    c.set_defaults(func=_train_classifier)

    e = subparsers.add_parser(
        "eval-prior",
        help=COMMANDS["eval-prior"].help,
        description="Sample 'a <colour> <shape>, <view> view' for every shape and colour with diffusers' "
        "StableDiffusionPipeline (DDIM, classifier-free guidance), classify the samples, and write samples.png and "
        "prior_eval.json to --out; with a classifier that has part heads, also the held-out composites and "
        "phrasings (composite_samples.png, composite_eval.json).",
    )
    e.add_argument("--prior", type=Path, required=True, help="Stable Diffusion folder (e.g. assets/priors/shapes)")
    e.add_argument("--classifier", type=Path, required=True, help="classifier file of train-shape-classifier")
    e.add_argument("--out", type=Path, required=True, help="output folder")
    e.add_argument("--samples-per-prompt", type=int, default=4, help="samples per shape x colour (default 4)")
    e.add_argument("--steps", type=int, default=25, help="DDIM steps (default 25)")
    e.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale (default 3)")
    e.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    e.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    e.set_defaults(func=_eval_prior)


def _train_prior(args: argparse.Namespace) -> int:
    from uni3d.tasks.embedded_prior.train import PriorTrainConfig, train_prior

    _threads(args.threads)
    cfg = PriorTrainConfig(
        steps=args.steps,
        vae_steps=args.vae_steps,
        batch_size=args.batch_size,
        seed=args.seed,
        sample_every=args.sample_every,
        checkpoint_every=args.checkpoint_every,
        snr_floor=args.snr_floor,
        init_from=None if args.init_from is None else str(args.init_from),
        width=args.width,
    )
    result = train_prior(cfg, args.dataset, args.out, args.export)
    vae = f"VAE of {args.init_from}" if args.init_from is not None else f"VAE loss {result.vae_loss:.5f}"
    print(
        f"saved the prior to {result.pipeline} ({vae}, diffusion loss {result.diffusion_loss:.5f}, "
        f"{result.seconds / 60:.1f} min); metrics and samples in {result.out}"
    )
    return 0


def _train_classifier(args: argparse.Namespace) -> int:
    from uni3d.tasks.embedded_prior.classifier import ClassifierConfig, save_classifier, train_classifier
    from uni3d.tasks.embedded_prior.dataset import load_shapes_dataset

    _threads(args.threads)
    data = load_shapes_dataset(args.dataset)
    cfg = ClassifierConfig(steps=args.steps, seed=args.seed, width=args.width, parts=bool(data.layout.any()))
    start = time.perf_counter()
    model, report = train_classifier(data, cfg)
    save_classifier(model, report, args.out)
    heads = ", ".join(
        f"{k.removesuffix('_accuracy')} {v:.3f}" for k, v in asdict(report).items() if k != "n_val" and v is not None
    )
    seconds = time.perf_counter() - start
    print(f"wrote {args.out}: held-out accuracy {heads} on {report.n_val} images ({seconds:.0f} s)")
    return 0


def _eval_prior(args: argparse.Namespace) -> int:
    from uni3d.tasks.embedded_prior.classifier import load_classifier
    from uni3d.tasks.embedded_prior.evaluate import EvalConfig, evaluate_prior
    from uni3d.tasks.embedded_prior.evaluate_composites import evaluate_composites

    _threads(args.threads)
    cfg = EvalConfig(
        samples_per_prompt=args.samples_per_prompt, steps=args.steps, guidance_scale=args.guidance, seed=args.seed
    )
    report = evaluate_prior(args.prior, args.classifier, args.out, cfg)
    print(json.dumps({k: v for k, v in asdict(report).items() if k != "config"}, indent=2))
    print(f"wrote {args.out / 'samples.png'} and {args.out / 'prior_eval.json'}")
    if load_classifier(args.classifier)[0].parts:
        composites = evaluate_composites(args.prior, args.classifier, args.out, cfg=cfg)
        print(json.dumps({k: v for k, v in asdict(composites).items() if k != "config"}, indent=2))
        print(f"wrote {args.out / 'composite_samples.png'} and {args.out / 'composite_eval.json'}")
    return 0
