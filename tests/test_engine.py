"""The shared distillation loop on a 1-D Gaussian task: update order, warm-up, EMA, both non-finite policies, and
that its generator step moves the samples toward the teacher."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from uni3d.engine import Denoised, DistillationLoop, Draw, LoopSettings, NonFiniteError, Part
from uni3d.losses import get_preset

TARGET = 2.0
"""The teacher's data distribution: ``N(TARGET, 1)``; its VE denoiser is exact (``D(x; s) = (x + s^2 T)/(1 + s^2)``)."""


class GaussianTask:
    """Generator ``x0 = mu + z``; fake score: a learned scalar mean ``m``; ratio head: a linear logit in ``x_t``."""

    def __init__(self, preset: str, *, nan_at: set[int] | None = None) -> None:
        self.preset = get_preset(preset)
        self.gen = torch.Generator().manual_seed(0)
        self.mu = nn.Parameter(torch.zeros(1))
        self.generator = nn.Module()
        self.generator.register_parameter("mu", self.mu)
        self.fake = nn.Linear(1, 1)
        self.ratio = nn.Linear(1, 1)
        self.calls: list[str] = []
        self.nan_at = nan_at or set()
        self.draws = 0

    def _randn(self, n: int) -> Tensor:
        return torch.randn(n, 1, generator=self.gen)

    @staticmethod
    def _denoiser(x: Tensor, sigma: Tensor, mean: Tensor | float) -> Tensor:
        s2 = sigma.view(-1, 1) ** 2
        return (x + s2 * mean) / (1 + s2)

    def draw(self, step: int, *, train_generator: bool) -> Draw:
        self.calls.append("draw" if train_generator else "draw-warm")
        self.draws += 1
        return Draw(self.mu + self._randn(64), step)

    def denoise(self, draw: Draw) -> Denoised:
        self.calls.append("denoise")
        sigma = torch.full((draw.x0.shape[0],), 1.0)
        x_t = draw.x0 + sigma.view(-1, 1) * self._randn(draw.x0.shape[0])
        d_fake = self._denoiser(x_t, sigma, self.fake.bias.detach())
        logits = self.ratio(x_t.detach()).squeeze(1).detach() if self.preset.uses_ratio else None
        d_real = self._denoiser(x_t, sigma, TARGET)
        return Denoised(x_t=x_t, sigma=sigma, d_real=d_real, d_fake=d_fake, ratio_logits=logits)

    def extra_loss(self, draw: Draw) -> Tensor | None:
        if draw.context in self.nan_at:
            return torch.tensor(math.nan)
        return None

    def fake_score_loss(self, draw: Draw) -> Tensor:
        self.calls.append("fake")
        return (self.fake.bias - draw.x0.detach().mean()).square().sum()

    def ratio_logits(self, draw: Draw, denoised: Denoised | None) -> tuple[Tensor, Tensor]:
        self.calls.append("ratio" if denoised is None else "ratio-on-pass")
        real = TARGET + self._randn(64)
        return self.ratio(real).squeeze(1), self.ratio(draw.x0.detach()).squeeze(1)

    def loop(self, **settings: object) -> DistillationLoop:
        learned = self.preset.fake_score == "learned"
        return DistillationLoop(
            self,
            self.preset,
            Part("generator", self.generator, torch.optim.SGD([self.mu], lr=0.05), optimizer_key="opt_g", clip=10.0),
            fake=Part("fake", self.fake, torch.optim.SGD(self.fake.parameters(), lr=0.2), optimizer_key="opt_f")
            if learned
            else None,
            ratio=Part("ratio", self.ratio, torch.optim.SGD(self.ratio.parameters(), lr=0.05), optimizer_key="opt_r")
            if self.preset.uses_ratio
            else None,
            settings=LoopSettings(**settings),  # type: ignore[arg-type]
        )


@pytest.mark.parametrize("preset", ["sds", "vsd", "uni-jeffreys"])
def test_generator_steps_move_the_samples_toward_the_teacher(preset: str) -> None:
    task = GaussianTask(preset)
    loop = task.loop()
    for _ in range(60):
        assert loop.step() is not None
    assert abs(task.mu.item() - TARGET) < 0.5 * TARGET  # started at 0
    assert loop.step_count == 60 and math.isfinite(loop.last["loss_generator"])
    if task.preset.uses_ratio:
        assert loop.counters.ratio_evaluations == 60 * 64


def test_update_orders_and_warmup() -> None:
    task = GaussianTask("uni-jeffreys")
    loop = task.loop(warmup_steps=1, fake_steps=2)
    loop.step()
    assert task.calls == ["draw-warm", "fake", "fake", "ratio"] and task.mu.item() == 0.0  # warm-up: no generator
    task.calls.clear()
    loop.step()
    assert task.calls == ["draw", "fake", "fake", "ratio", "denoise"] and task.mu.item() != 0.0

    task = GaussianTask("uni-jeffreys")
    loop = task.loop(order="generator-first", warmup_steps=1)
    loop.step()
    assert task.calls == ["draw-warm", "denoise", "ratio-on-pass", "fake"] and task.mu.item() == 0.0
    task.calls.clear()
    loop.step()
    assert task.calls == ["draw", "denoise", "ratio-on-pass", "fake"] and task.mu.item() != 0.0


def test_skip_policy_counts_and_drops_only_the_nonfinite_update() -> None:
    task = GaussianTask("vsd", nan_at={1})
    loop = task.loop()
    loop.step()
    mu, fake = task.mu.item(), task.fake.bias.item()
    assert loop.step() is not None  # step 1: the generator's loss is NaN
    assert task.mu.item() == mu and task.fake.bias.item() != fake  # the fake score still trained
    assert loop.counters.skipped_generator_steps == 1 and loop.step_count == 2
    assert "rollbacks" not in loop.counters.report("skip") and loop.counters.report("skip")["skipped_fake_steps"] == 0


def test_rollback_policy_restores_the_snapshot_and_gives_up_after_max_rollbacks() -> None:
    task = GaussianTask("vsd", nan_at={3})
    loop = task.loop(nonfinite="rollback", snapshot_every=2, max_rollbacks=3)
    for _ in range(2):
        loop.step()
    snapshot_mu = task.mu.item()  # the snapshot is taken as step 2 (0-based) starts
    loop.step()
    assert loop.step_count == 3 and task.mu.item() != snapshot_mu
    assert loop.step() is None  # step 3 (0-based) is NaN: back to the snapshot at step 2
    assert loop.step_count == 2 and task.mu.item() == snapshot_mu
    assert loop.counters.rollbacks == 1 and loop.counters.nonfinite_steps == [4]
    assert "skipped_generator_steps" not in loop.counters.report("rollback")
    task.nan_at = {2, 3}
    with pytest.raises(NonFiniteError, match="diverged: 4 non-finite steps"):
        for _ in range(10):
            loop.step()


def test_ema_follows_the_generator_with_its_decay() -> None:
    task = GaussianTask("sds")
    ema = nn.Module()
    ema.register_parameter("mu", nn.Parameter(torch.zeros(1), requires_grad=False))
    loop = task.loop()
    loop.ema, loop.ema_decay = ema, lambda step: 0.5
    loop.step()
    assert ema.mu.item() == pytest.approx(0.5 * task.mu.item())
    state = loop.training_state()
    assert set(state) == {"step", "generator", "opt_g", "ema"}
