"""How alike are the particles' gradients early in a run (docs/text_to_3d.md, "Why the particles were all cubes").

Usage: .venv/bin/python tools/probes/particle_gradients.py sds,vsd,uni-jeffreys "a red object"

Eight particles of one run get the same cameras each step (so only each particle's own noise and timestep jitter
differ); at steps 0, 5, 10, 25 and 50 the mean pairwise cosine of the particles' field gradients is printed, then
the run takes its normal step. 1.0: every particle is pushed the same way; 0: unrelated pushes.
"""

from __future__ import annotations

import json
import sys

import torch

from uni3d.scene.cameras import Cameras
from uni3d.tasks.text_to_3d.config import GenerateConfig
from uni3d.tasks.text_to_3d.run import load_prior
from uni3d.tasks.text_to_3d.trainer import TextTo3D, prior_image_size

K = 8
CHECKS = (0, 5, 10, 25, 50)


def shared_cameras(trainer: TextTo3D) -> None:
    """Every particle of a step gets the same cameras (the sampler draws one particle's views, repeated)."""
    draw_views = trainer.sampler.sample

    def sample(n: int, size: int) -> Cameras:
        return draw_views(n // K, size)[torch.arange(n) % (n // K)]

    object.__setattr__(trainer.sampler, "sample", sample)


def agreement(trainer: TextTo3D, step: int) -> float:
    """Mean pairwise cosine of the particles' generator gradients at ``step`` (nothing is updated)."""
    draw = trainer.draw(step, train_generator=True)
    _, total, _, _ = trainer.loop._generator_loss(draw)
    params = [list(r.parameters()) for r in trainer.renderers]
    grads = torch.autograd.grad(total, [p for ps in params for p in ps], allow_unused=True)
    flat, i = [], 0
    for ps in params:
        parts = [(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads[i:], ps, strict=False)]
        flat.append(torch.cat(parts))
        i += len(ps)
    unit = torch.nn.functional.normalize(torch.stack(flat).double(), dim=1)
    cos = unit @ unit.T
    return float((cos.sum() - cos.diagonal().sum()) / (K * (K - 1)))


def main(presets: list[str], prompt: str) -> dict[str, list[tuple[int, float]]]:
    torch.set_num_threads(1)
    prior, rows = None, {}
    for preset in presets:
        cfg = GenerateConfig.from_dict({"prompt": prompt, "preset": preset, "particles": K, "device": "cpu"})
        prior = prior or load_prior(cfg)
        cfg = cfg.resolved(prior_image_size(prior))
        torch.manual_seed(cfg.seed)
        trainer = TextTo3D(cfg, prior)
        shared_cameras(trainer)
        rows[preset] = []
        for step in range(max(CHECKS) + 1):
            if step in CHECKS:
                rows[preset].append((step, round(agreement(trainer, step), 3)))
                print(preset, *rows[preset][-1], flush=True)
            trainer.train_step()
    return rows


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1].split(","), sys.argv[2] if len(sys.argv) > 2 else "a red object")))
