"""Which checkpoint of a run is the best: the one at the step with the lowest held-out loss, as the newest
checkpoint's `held_out.json` records it (see `evaluation`). Pruning never deletes it, and `best` names it wherever
`latest` names the newest (`resume_from=best`, `sidestep.export RUN --from best`, `sidestep.sample RUN
checkpoint=best`)."""

import json
from pathlib import Path
from typing import List, Optional

from sidestep.errors import ConfigError
from sidestep.training.evaluation import HELD_OUT_FILE

NEEDS_HELD_OUT = "needs a held-out set (data.val_fraction > 0): the best checkpoint is the one with the lowest held-out loss"


def best_step(checkpoint: Path) -> Optional[int]:
    """The best step as `checkpoint` records it; None when its run had no held-out set (or nothing evaluated)."""
    try:
        step = json.loads((Path(checkpoint) / HELD_OUT_FILE).read_text()).get("best_step")
    except (OSError, ValueError, AttributeError):
        return None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def best_of(checkpoints: List[Path]) -> Optional[Path]:
    """The best of a run's complete checkpoints (oldest first), if the newest names one that is there."""
    step = best_step(checkpoints[-1]) if checkpoints else None
    return next((c for c in checkpoints if c.name == f"step-{step:07d}"), None) if step is not None else None


def pick(checkpoints: List[Path], which: str, run_dir: Path, option: str) -> Path:
    """`latest` or `best` of `checkpoints`; one line naming `option` when there is none."""
    if not checkpoints:
        raise ConfigError(f"{option}={which}: {run_dir} has no complete checkpoint yet")
    if which == "latest":
        return checkpoints[-1]
    step, found = best_step(checkpoints[-1]), best_of(checkpoints)
    if step is None:
        raise ConfigError(f"{option}=best: {run_dir} has no best checkpoint; it {NEEDS_HELD_OUT}")
    if found is None:
        raise ConfigError(f"{option}=best: the best checkpoint of {run_dir} (step {step}) is no longer there")
    return found
