"""Learning-rate multipliers for `torch.optim.lr_scheduler.LambdaLR`.

Each `conf/scheduler/*.yaml` names one of these factories (`_partial_: true`); the trainer calls it with the
run's total optimizer steps. Warmup ramps linearly from 10% to 100% of the LR, as in Side-Step.
"""

import math
from dataclasses import dataclass

WARMUP_START = 0.1


@dataclass(frozen=True)
class Schedule:
    """A picklable LR multiplier: warmup, then `shape` over the remaining steps."""

    shape: str
    warmup_steps: int
    total_steps: int

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return WARMUP_START + (1.0 - WARMUP_START) * step / self.warmup_steps
        if self.shape == "constant":
            return 1.0
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        if self.shape == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.shape == "linear":
            return 1.0 - progress
        raise ValueError(f"unknown learning-rate schedule shape {self.shape!r}")


def cosine(warmup_steps: int, total_steps: int) -> Schedule:
    return Schedule("cosine", warmup_steps, total_steps)


def linear(warmup_steps: int, total_steps: int) -> Schedule:
    return Schedule("linear", warmup_steps, total_steps)


def constant(warmup_steps: int, total_steps: int) -> Schedule:
    """No warmup and no decay, whatever `warmup_steps` says (Prodigy's required schedule)."""
    return Schedule("constant", 0, total_steps)


def constant_with_warmup(warmup_steps: int, total_steps: int) -> Schedule:
    return Schedule("constant", warmup_steps, total_steps)
