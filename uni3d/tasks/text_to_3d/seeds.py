"""Random streams fixed by ``(run seed, particle index)`` alone: a particle draws the same noise in a run of any
particle count, and a resumed run draws it again instead of keeping it in the checkpoint."""

from __future__ import annotations

import numpy as np
import torch


def particle_generator(seed: int, particle: int, *stream: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, particle, *stream)`` through NumPy's ``SeedSequence`` (independent
    streams for nearby integers; ``stream`` tells apart several draws of one particle)."""
    state = np.random.SeedSequence([seed, particle, *stream]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))
