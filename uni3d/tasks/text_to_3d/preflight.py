"""The checks of a run that need no model, made before the prior loads: a mistake costs a second, not a load."""

from __future__ import annotations

from pathlib import Path

from uni3d.devices import resolve_device
from uni3d.errors import UsageError
from uni3d.io import check_output_folder
from uni3d.models.prior_source import resolve_prior_source
from uni3d.tasks.text_to_3d.config import EMBEDDED_PRIOR, GenerateConfig


def preflight(cfg: GenerateConfig, out: Path | None = None, *, check_prior: bool = True) -> None:
    """One-line errors for a run folder ``out`` that cannot be written, a device that is not here, and (with
    ``check_prior``) a prior whose files are missing or damaged; the settings themselves were checked when ``cfg``
    was built."""
    if out is not None:
        check_output_folder(out)
    resolve_device(cfg.device)
    if not check_prior:
        return
    if cfg.prior == EMBEDDED_PRIOR and not Path(cfg.prior_path).is_dir():
        raise UsageError(
            f"the embedded prior {EMBEDDED_PRIOR} is missing: train it with `uni3d train-prior` (it writes "
            f"{EMBEDDED_PRIOR}), or pass --prior with a Stable Diffusion folder or a cached hub id"
        )
    resolve_prior_source(cfg.prior_path)
