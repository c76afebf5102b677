"""The denoiser outputs and the density ratio that a generator loss reads, as one object (METHOD.md section 1)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import Tensor

from uni3d.losses.ratio import RatioEstimate


@dataclass(frozen=True, kw_only=True)
class DenoiserOutputs:
    """One noise draw of a generator batch, in VE units (``x_t = x0 + sigma n``) and batch-first shapes.

    ``x0`` is the live generator output and ``x_t`` its noised copy; ``d_real = D_q(x_t; sigma)`` is the teacher
    (classifier-free guidance already applied), ``d_fake = D_p(x_t; sigma)`` the fake score (``None`` where the
    preset uses the conditional score ``c = x0`` in its place, as SDS does). For the expanded and SiD forms both
    denoisers must come from networks with frozen parameters evaluated on the live ``x_t``. ``ratio`` is the ratio
    head's estimate of ``r = q_t / p_t`` (``None``: ``r = 1``); its ``moves`` mask says which samples' ``log r``
    follows ``x_t`` (METHOD.md section 5).
    """

    x0: Tensor
    x_t: Tensor
    sigma: Tensor
    d_real: Tensor
    d_fake: Tensor | None = None
    ratio: RatioEstimate | None = None

    @property
    def log_r(self) -> Tensor | None:
        return None if self.ratio is None else self.ratio.log_r

    @property
    def fake(self) -> Tensor:
        """``d_fake``; a clear error for a form that needs it where it is missing."""
        if self.d_fake is None:
            raise ValueError("this loss form needs the fake-score prediction d_fake")
        return self.d_fake

    def with_changes(self, **changes: object) -> DenoiserOutputs:
        return replace(self, **changes)  # type: ignore[arg-type]
