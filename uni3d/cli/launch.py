"""Workers started by ``torchrun``: one process group to wait for every worker, and each worker's own device.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; the batch then
joins a ``gloo`` group (CPU collectives: only a barrier is needed, and it works with or without GPUs), runs on
``cuda:LOCAL_RANK`` when CUDA is there, and at the end waits for all workers so that rank 0 can write the combined
report. A SLURM array's tasks are separate jobs with no such group: they are merged afterwards (``--merge``).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

WAIT = datetime.timedelta(days=7)
"""How long the final barrier waits for the slowest worker (a batch of long runs takes hours)."""


@dataclass(frozen=True)
class WorkerGroup:
    """This worker's ``rank`` and ``device`` in a ``torchrun`` launch."""

    rank: int
    device: str

    def finish(self) -> bool:
        """Wait for every worker; ``True`` on rank 0, which then writes what all of them made."""
        import torch.distributed as dist

        dist.barrier()
        return self.rank == 0


@contextmanager
def worker_group() -> Iterator[WorkerGroup | None]:
    """The :class:`WorkerGroup` of a ``torchrun`` worker (a world of more than one), else ``None``."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2 or "MASTER_ADDR" not in os.environ:
        yield None
        return
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=WAIT)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = f"cuda:{local % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
    try:
        yield WorkerGroup(dist.get_rank(), device)
    finally:
        dist.destroy_process_group()
