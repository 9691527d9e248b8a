"""The states a checkpoint restores into live objects -- the learning-rate schedule, the step generators and the
optimizer -- checked against this run's own before they are trusted. `trainer_state.json` and the generator file
can be edited consistently (their digests are plain sha256), and torch takes nearly any dict into a scheduler or
optimizer: a wrong one would crash mid-run with a traceback, hang, or change the learning rate without a word.
"""

import math
from pathlib import Path
from typing import Dict

import torch

from sidestep.training.checkpoint_check import STATE_FILE, CheckpointError

VOLATILE = "_last_lr"  # the rates the schedule last applied: any finite numbers, one per parameter group


def check_schedule(checkpoint: Path, saved, fresh: dict, step: int) -> None:
    """`saved` must be the state this run's schedule reaches at `step`: the same base rates and fields."""
    expected = {**fresh, "last_epoch": step, "_step_count": step + 1}
    rates = saved.get(VOLATILE) if isinstance(saved, dict) else None
    fits = (isinstance(saved, dict) and set(saved) == set(fresh)
            and all(saved[k] == v and type(saved[k]) is type(v) for k, v in expected.items() if k != VOLATILE)
            and isinstance(rates, list) and len(rates) == len(fresh[VOLATILE])
            and all(isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) for r in rates))
    if not fits:
        raise CheckpointError(f"{checkpoint / STATE_FILE}: its scheduler state is not this run's schedule at step "
                              f"{step} (edited, or another schedule); resume from another checkpoint")


def check_generators(path: Path, saved: Dict[str, torch.Tensor], fresh: Dict[str, torch.Tensor]) -> None:
    """Every generator state this run draws from, each the byte layout of a generator here."""
    for name, state in fresh.items():
        found = saved.get(name)
        if found is None or found.dtype != state.dtype or found.shape != state.shape:
            what = "missing" if found is None else f"{found.dtype} {list(found.shape)}, not {state.dtype} {list(state.shape)}"
            raise CheckpointError(f"{path}: random state {name} is {what}; resume from another checkpoint")


def check_optimizer(checkpoint: Path, optimizer: torch.optim.Optimizer) -> None:
    """After loading: every per-parameter state tensor of the parameter's rank has the parameter's shape (a wrong
    one is only found by the first step, as a shape error). Lower-rank tensors (Adafactor's factored moments,
    8-bit quantisation maps) are the optimizer's own business."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and param.dim() >= 2 and value.dim() == param.dim() \
                        and value.shape != param.shape:
                    raise CheckpointError(f"{checkpoint / 'optimizer.bin'}: state {name} has shape {list(value.shape)} "
                                          f"for a parameter of {list(param.shape)}; resume from another checkpoint")
