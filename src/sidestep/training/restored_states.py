"""The states a checkpoint restores into live objects -- the learning-rate schedule, the step generators and the
optimizer -- checked against this run's own before they are trusted. `trainer_state.json` and the generator file
can be edited consistently (their digests are plain sha256), and torch takes nearly any dict into a scheduler or
optimizer: a wrong one would crash mid-run with a traceback, hang, or change the learning rate without a word.
"""

import math
from pathlib import Path
from typing import Dict, List

import torch

from sidestep.training.checkpoint_check import STATE_FILE, CheckpointError

VOLATILE = "_last_lr"  # the rates the schedule last applied: any finite numbers, one per parameter group
LAMBDAS = "lr_lambdas"  # each multiplier's fields, which LambdaLR writes back into it: only the run length may differ


def check_schedule(checkpoint: Path, saved, fresh: dict, step: int) -> None:
    """`saved` must be the state this run's schedule reaches at `step`: the same base rates and fields (a run
    trained on to more steps keeps the length it was started with)."""
    expected = {**fresh, "last_epoch": step, "_step_count": step + 1}
    rates = saved.get(VOLATILE) if isinstance(saved, dict) else None
    fits = (isinstance(saved, dict) and set(saved) == set(fresh)
            and all(saved[k] == v and type(saved[k]) is type(v) for k, v in expected.items() if k not in (VOLATILE, LAMBDAS))
            and isinstance(rates, list) and len(rates) == len(fresh[VOLATILE])
            and all(isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) for r in rates)
            and isinstance(saved[LAMBDAS], list) and len(saved[LAMBDAS]) == len(fresh[LAMBDAS])
            and all(_same_multiplier(a, b) for a, b in zip(saved[LAMBDAS], fresh[LAMBDAS])))
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


def check_optimizer(checkpoint: Path, optimizer: torch.optim.Optimizer, settings: Dict[str, object],
                    rates: List[float]) -> None:
    """After loading: each parameter group holds the configured `settings` (weight decay, betas, ...: torch takes the
    saved ones over the run's) and the learning rate the schedule last applied (`rates`); every per-parameter state
    tensor of the parameter's rank has the parameter's shape (a wrong one is only found by the first step, as a
    shape error). Lower-rank tensors (Adafactor's factored moments, 8-bit quantisation maps) are the optimizer's own."""
    path = checkpoint / "optimizer.bin"
    for group, rate in zip(optimizer.param_groups, rates):
        edited = [k for k, v in settings.items() if k in group and _plain(group[k]) != _plain(v)]
        if edited or group.get("lr") != rate:
            what = f"{edited[0]} {group[edited[0]]!r}, this run has {settings[edited[0]]!r}" if edited \
                else f"lr {group.get('lr')!r}, its schedule says {rate!r}"
            raise CheckpointError(f"{path}: holds {what} (edited); resume from another checkpoint")
    for group in optimizer.param_groups:
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and param.dim() >= 2 and value.dim() == param.dim() \
                        and value.shape != param.shape:
                    raise CheckpointError(f"{path}: state {name} has shape {list(value.shape)} "
                                          f"for a parameter of {list(param.shape)}; resume from another checkpoint")


def _same_multiplier(saved, fresh) -> bool:
    if not isinstance(fresh, dict):
        return saved == fresh
    return (isinstance(saved, dict) and set(saved) == set(fresh)
            and all(type(saved[k]) is type(v) and (saved[k] == v or k == "total_steps") for k, v in fresh.items())
            and saved.get("total_steps", 1) >= 1)


def _plain(value):
    """Betas and the like compare as lists whether a tuple (torch) or a list (the config)."""
    return list(value) if isinstance(value, (tuple, list)) else value
