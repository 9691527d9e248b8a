"""Learning-rate multipliers for `torch.optim.lr_scheduler.LambdaLR`, one small picklable class per schedule.

Each `conf/scheduler/*.yaml` names one of these (`_partial_: true`, its knobs from its schema in
`config/parts.py`); the trainer calls it with the run's total optimizer steps. `LambdaLR` checkpoints a
multiplier's fields, so every field is a plain number and the class says which shape they belong to.
"""

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    """A linear warm-up from `warmup_start_factor` to 1 over `warmup_steps`, then `decay` of the progress through
    the remaining steps (0 at the end of warm-up, 1 at the last step and after it)."""

    warmup_steps: int
    total_steps: int
    warmup_start_factor: float = 0.1

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_start_factor + (1.0 - self.warmup_start_factor) * step / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        return self.decay(min(1.0, (step - self.warmup_steps) / decay_steps))

    def decay(self, progress: float) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class Cosine(Schedule):
    def decay(self, progress: float) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Linear(Schedule):
    def decay(self, progress: float) -> float:
        return 1.0 - progress


@dataclass(frozen=True)
class ConstantWithWarmup(Schedule):
    def decay(self, progress: float) -> float:
        return 1.0


@dataclass(frozen=True)
class Constant(Schedule):
    """No warm-up and no decay, whatever `warmup_steps` says (Prodigy's required schedule)."""

    def __call__(self, step: int) -> float:
        return 1.0


@dataclass(frozen=True)
class CosineWithRestarts(Schedule):
    """SGDR (Loshchilov & Hutter) with equal cycles: each of `cycles` falls from 1 to `eta_min` along a half
    cosine and restarts at 1; the last step and any after it sit at `eta_min`."""

    cycles: int = 3
    eta_min: float = 0.0

    def decay(self, progress: float) -> float:
        if progress >= 1.0:
            return self.eta_min
        within = (self.cycles * progress) % 1.0
        return self.eta_min + (1.0 - self.eta_min) * 0.5 * (1.0 + math.cos(math.pi * within))


@dataclass(frozen=True)
class Polynomial(Schedule):
    """From 1 to `end_factor` as (1 - progress) ** `power`."""

    power: float = 2.0
    end_factor: float = 0.0

    def decay(self, progress: float) -> float:
        return self.end_factor + (1.0 - self.end_factor) * (1.0 - progress) ** self.power
