"""One distillation step for any task: fake-score, ratio-head and generator updates (METHOD.md sections 3-5, 7).

Per step the loop asks the task for a draw ``x0 = G(...)`` and then, in one of two orders:

- ``fake-first`` (SiD's alternating order; the toy and the image distiller): ``fake_steps`` denoising steps of
  the fake score ``D_p`` on ``sg(x0)``, one balanced-BCE step of the ratio head, then the generator step on the
  preset's loss with ``D_q`` and the updated ``D_p``;
- ``generator-first`` (text to 3D): the generator step first, then the ratio head on the generator pass's own
  fake-score features (both sides of its BCE see the same ``D_p``), then the fake score.

During the first ``warmup_steps`` only the fake score and the ratio head train. A non-finite loss or gradient
norm is never applied: under the ``skip`` policy that one update is counted and dropped; under ``rollback``
every trained tensor returns to the last snapshot (taken every ``snapshot_every`` steps) and the step is drawn
again, until ``max_rollbacks`` is exceeded. The loop draws no random numbers itself: every draw is the task's,
so a task keeps its own random stream (and a resumed run its bit-for-bit continuation).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from uni3d.diffusion.ema import ema_update
from uni3d.engine.counters import Counters, NonFiniteError, NonFinitePolicy
from uni3d.losses import (
    DenoiserOutputs,
    Preset,
    RatioEstimate,
    discriminator_loss,
    generator_loss,
    ratio_from_logits,
)

Order = Literal["fake-first", "generator-first"]
STAGE = "uni3d."
"""Prefix of the step's named stages for ``torch.profiler`` (``record_function``; free when nothing profiles):
the loop's ``backward.<loss>``, ``optimizer.<loss>``, ``fake_score_loss`` and ``ratio_loss``, and the task's own
(text to 3D: ``render``, ``vae_encode``, ``teacher``, ``fake``, ``ratio_head``). They do not nest, so their times
add up to the part of a step they cover (``uni3d bench sd-step --profile``)."""


@dataclass(frozen=True)
class Draw:
    """One batch of generator output: ``x0`` (live when the generator trains this step) and what the task needs
    again to evaluate it (labels, prompt embeddings, cameras, the render)."""

    x0: Tensor
    context: Any = None
    groups: int = 1
    """Generators in the batch, in equal consecutive blocks (particles): the generator loss is the sum over
    blocks of each block's mean, so each generator gets the gradient it would get alone."""


@dataclass(frozen=True, kw_only=True)
class Denoised:
    """The teacher and fake-score denoisers at ``x_t = x0 + sigma n`` (VE units), as the generator loss reads them.

    ``ratio_logits`` are the ratio head's detached logits at ``x_t`` (``None`` for presets without a ratio);
    ``features`` is whatever the task's ratio step needs again from this pass (the fake score's features).
    """

    x_t: Tensor
    sigma: Tensor
    d_real: Tensor
    d_fake: Tensor | None
    ratio_logits: Tensor | None = None
    features: Tensor | None = None


class DistillationTask(Protocol):
    """What a task supplies to :class:`DistillationLoop`."""

    def draw(self, step: int, *, train_generator: bool) -> Draw:
        """The step's generator output; without ``train_generator`` it may be computed without gradient."""
        ...

    def denoise(self, draw: Draw) -> Denoised:
        """``D_q`` and ``D_p`` at a fresh noise level: frozen parameters, live input when the preset needs it."""
        ...

    def extra_loss(self, draw: Draw) -> Tensor | None:
        """A weighted scalar added to the generator loss (regularizers, DMD's regression), or ``None``."""
        ...

    def fake_score_loss(self, draw: Draw) -> Tensor:
        """The fake score's denoising loss (a scalar) on ``sg(x0)``."""
        ...

    def ratio_logits(self, draw: Draw, denoised: Denoised | None) -> tuple[Tensor, Tensor]:
        """``(real, fake)`` logits of the ratio head (``denoised``: the generator pass, in ``generator-first``)."""
        ...


@dataclass
class Part:
    """A trained network, its optimizer and their names in the training state.

    ``state`` / ``load`` default to the module's ``state_dict`` / ``load_state_dict`` (the LoRA fake score saves
    only its adapters). ``clip`` caps the gradient norm of each of ``clip_groups`` on its own before each step
    (default: one group, the module's parameters; one group per particle keeps particles independent).
    """

    key: str
    module: nn.Module
    optimizer: torch.optim.Optimizer
    _: KW_ONLY
    optimizer_key: str
    clip: float | None = None
    clip_groups: list[list[nn.Parameter]] | None = None
    state: Callable[[], dict[str, Any]] | None = None
    load: Callable[[dict[str, Any]], Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return self.state() if self.state is not None else self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        (self.load or self.module.load_state_dict)(state)

    def groups(self) -> list[list[nn.Parameter]]:
        return self.clip_groups if self.clip_groups is not None else [list(self.module.parameters())]


@dataclass(frozen=True)
class LoopSettings:
    """How the loop runs: update order, warm-up, ratio estimate, non-finite policy."""

    order: Order = "fake-first"
    fake_steps: int = 1
    warmup_steps: int = 0
    ratio_clamp: float = 5.0
    ratio_motion: bool = True
    """``False``: no sample's ratio moves with ``x_t`` (constant weights ``h(r)``, METHOD.md section 4)."""
    nonfinite: NonFinitePolicy = "skip"
    snapshot_every: int = 10
    max_rollbacks: int = 20
    diverged_hint: str = "try a lower learning rate"


@dataclass(frozen=True)
class StepResult:
    """Scalars of one completed step (``None``: that update did not run)."""

    loss: float
    """The preset's generator loss (batch mean; with several generators, the mean of their means), without
    :meth:`DistillationTask.extra_loss`."""
    extra: float | None
    fake_loss: float | None
    ratio_loss: float | None
    draw: Draw
    """The draw the step was made on."""


def _scalar(loss: Tensor) -> float:
    return float(loss.detach())


class _NonFinite(Exception):
    """A non-finite value under the ``rollback`` policy (caught by :meth:`DistillationLoop.step`)."""


@dataclass
class DistillationLoop:
    """The shared step of every distiller; see the module docstring for the order and the policies."""

    task: DistillationTask
    preset: Preset
    generator: Part
    _: KW_ONLY
    fake: Part | None = None
    ratio: Part | None = None
    settings: LoopSettings = field(default_factory=LoopSettings)
    ema: nn.Module | None = None
    ema_decay: Callable[[int], float] | None = None
    """The EMA decay after ``n`` generator steps' worth of steps (called with the step count)."""
    reduce: Callable[[Tensor], float] = _scalar
    """A loss tensor to the float every process agrees on (the mean over ``torchrun`` ranks)."""
    step_count: int = 0
    counters: Counters = field(default_factory=Counters)
    last: dict[str, float] = field(default_factory=dict)
    """The latest value of each loss (``loss_fake``, ``loss_ratio``, ``loss_generator``) and ``grad_norm``."""
    _snapshot: dict[str, Any] | None = None

    # ---- updates -------------------------------------------------------------------------------------------------

    def _apply(self, part: Part, loss: Tensor, name: str, counter: str) -> bool:
        """Backward and step ``part``'s optimizer unless the loss or the clipped gradient norm is non-finite.

        Under ``skip`` the backward runs even then (every ``torchrun`` rank's reducer must finish its
        iteration), the gradients are discarded and ``counter`` counts it; under ``rollback`` the step stops.
        """
        value = self.reduce(loss)
        self.last[name] = value
        rollback = self.settings.nonfinite == "rollback"
        if rollback and not math.isfinite(value):
            raise _NonFinite
        part.optimizer.zero_grad(set_to_none=True)
        with record_function(f"{STAGE}backward.{name}"):
            loss.backward()
        finite = math.isfinite(value)
        if finite and part.clip is not None:
            norms = [float(torch.nn.utils.clip_grad_norm_(group, part.clip)) for group in part.groups()]
            self.last["grad_norm"] = max(norms)
            finite = all(math.isfinite(norm) for norm in norms)
        if finite:
            with record_function(f"{STAGE}optimizer.{name}"):
                part.optimizer.step()
            return True
        if rollback:
            raise _NonFinite
        part.optimizer.zero_grad(set_to_none=True)
        setattr(self.counters, counter, getattr(self.counters, counter) + 1)
        return False

    def _fake_update(self, draw: Draw) -> float | None:
        if self.fake is None:
            return None
        for _ in range(self.settings.fake_steps):
            with record_function(f"{STAGE}fake_score_loss"):
                loss = self.task.fake_score_loss(draw)
            self._apply(self.fake, loss, "loss_fake", "skipped_fake_steps")
        return self.last["loss_fake"]

    def _ratio_update(self, draw: Draw, denoised: Denoised | None) -> float | None:
        if self.ratio is None:
            return None
        with record_function(f"{STAGE}ratio_loss"):
            loss = discriminator_loss(*self.task.ratio_logits(draw, denoised))
        self._apply(self.ratio, loss, "loss_ratio", "skipped_ratio_steps")
        return self.last["loss_ratio"]

    def ratio_estimate(self, logits: Tensor | None) -> RatioEstimate | None:
        """``log r`` from the head's logits (clamped and counted), held constant without ``ratio_motion``."""
        if logits is None or not self.preset.uses_ratio:
            return None
        est = ratio_from_logits(logits, self.settings.ratio_clamp)
        est.count_into(self.counters)
        return est if self.settings.ratio_motion else est.held_constant()

    def _generator_loss(self, draw: Draw) -> tuple[Denoised, Tensor, Tensor, Tensor | None]:
        """``(denoised, total, loss, extra)``: the preset's loss (batch mean) plus the task's extra term."""
        den = self.task.denoise(draw)
        ratio = self.ratio_estimate(den.ratio_logits)
        outputs = DenoiserOutputs(
            x0=draw.x0, x_t=den.x_t, sigma=den.sigma, d_real=den.d_real, d_fake=den.d_fake, ratio=ratio
        )
        per_sample = generator_loss(self.preset, outputs)
        if draw.groups == 1:
            loss = per_sample.mean()
        else:
            loss = per_sample.view(draw.groups, -1).mean(1).sum()
        extra = self.task.extra_loss(draw)
        return den, loss if extra is None else loss + extra, loss / draw.groups, extra

    def _step(self) -> StepResult:
        warm = self.step_count < self.settings.warmup_steps
        draw = self.task.draw(self.step_count, train_generator=not warm)
        if self.settings.order == "fake-first":
            fake_loss = self._fake_update(draw)
            ratio_loss = self._ratio_update(draw, None)
            if warm:
                return StepResult(math.nan, None, fake_loss, ratio_loss, draw)
            _, total, loss, extra = self._generator_loss(draw)
            self._apply(self.generator, total, "loss_generator", "skipped_generator_steps")
        else:
            den, total, loss, extra = self._generator_loss(draw)
            if warm:
                if self.settings.nonfinite == "rollback" and not math.isfinite(self.reduce(total)):
                    raise _NonFinite
            else:
                self._apply(self.generator, total, "loss_generator", "skipped_generator_steps")
            ratio_loss = self._ratio_update(draw, den)
            fake_loss = self._fake_update(draw)
        if self.ema is not None and self.ema_decay is not None:
            ema_update(self.ema, self.generator.module, self.ema_decay(self.step_count))
        return StepResult(loss.item(), None if extra is None else extra.item(), fake_loss, ratio_loss, draw)

    def step(self) -> StepResult | None:
        """One step; ``None`` when it was rolled back (``rollback`` policy), which raises
        :class:`NonFiniteError` once more than ``max_rollbacks`` steps were."""
        s = self.settings
        if s.nonfinite == "rollback" and (self._snapshot is None or self.step_count % s.snapshot_every == 0):
            self._snapshot = copy.deepcopy(self.training_state())
        try:
            result = self._step()
        except _NonFinite:
            assert self._snapshot is not None
            self.counters.rollbacks += 1
            self.counters.nonfinite_steps.append(self.step_count + 1)
            if self.counters.rollbacks > s.max_rollbacks:
                raise NonFiniteError(
                    f"training diverged: {self.counters.rollbacks} non-finite steps "
                    f"(last at step {self.step_count + 1}); {s.diverged_hint}"
                ) from None
            self.load_training_state(self._snapshot)
            return None
        self.step_count += 1
        return result

    # ---- state ---------------------------------------------------------------------------------------------------

    def _parts(self) -> list[Part]:
        return [p for p in (self.generator, self.fake, self.ratio) if p is not None]

    def training_state(self) -> dict[str, Any]:
        """The step, every trained network, its optimizer and the EMA (what a rollback restores)."""
        state: dict[str, Any] = {"step": self.step_count}
        for part in self._parts():
            state[part.key] = part.state_dict()
            state[part.optimizer_key] = part.optimizer.state_dict()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`training_state` (optimizer states are copied, so a snapshot stays reusable)."""
        self.step_count = int(state["step"])
        for part in self._parts():
            part.load_state_dict(state[part.key])
            part.optimizer.load_state_dict(copy.deepcopy(state[part.optimizer_key]))
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
