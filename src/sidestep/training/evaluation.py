"""When the held-out loss is scored, which step is the best so far, and when a run stops improving.

An evaluation is due every `trainer.eval_every_steps` steps and/or at the end of every `trainer.eval_every_epochs`
epochs (both null: every `trainer.log_heavy_every` steps), and at the last step. It scores the held-out set at fixed
timesteps and noise (`validation.HeldOutLoss`) with the weights the run exports (the EMA when on). The best step
is the one with the lowest held-out loss (a tie is no new best); the loop writes a checkpoint there, which pruning
keeps (see `best_checkpoint`). Early stopping (`trainer.early_stop.patience`) ends the run after that many
evaluations in a row without a drop of at least `min_delta` below the best loss so far.

What it knows goes into every checkpoint (`held_out.json`), so a resumed run keeps its best and its patience.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, List, Optional

import torch
from accelerate import Accelerator
from omegaconf import DictConfig

from sidestep.atomic import atomic_file
from sidestep.errors import first_line
from sidestep.training.checkpoint_check import CheckpointError
from sidestep.training.ema import AdapterEma
from sidestep.training.validation import TIMESTEPS, HeldOutLoss

HELD_OUT_FILE = "held_out.json"


@dataclass
class HeldOutRecord:
    evaluations: int = 0
    loss: Optional[float] = None  # the last evaluation's
    best_step: Optional[int] = None
    best_loss: Optional[float] = None
    without_improvement: int = 0  # evaluations since the loss last dropped at least min_delta below the best

    def add(self, step: int, loss: float, min_delta: float) -> bool:
        """Count one evaluation; True when it is a new best."""
        improved = self.best_loss is None or loss < self.best_loss - min_delta
        new_best = self.best_loss is None or loss < self.best_loss
        self.evaluations, self.loss = self.evaluations + 1, loss
        self.without_improvement = 0 if improved else self.without_improvement + 1
        if new_best:
            self.best_step, self.best_loss = step, loss
        return new_best


def eval_steps(cfg: DictConfig, steps_per_epoch: int, total_steps: int) -> List[int]:
    """The steps an evaluation is due at, in order (for the plan; the loop asks `Evaluation.due`)."""
    every_steps, every_epochs = cadence(cfg)
    due = set(range(every_steps, total_steps + 1, every_steps)) if every_steps else set()
    if every_epochs:
        due |= {e * steps_per_epoch for e in range(every_epochs, total_steps // steps_per_epoch + 1, every_epochs)}
    return sorted(due | {total_steps})


def cadence(cfg: DictConfig):
    tr = cfg.trainer
    if tr.eval_every_steps is None and tr.eval_every_epochs is None:
        return tr.log_heavy_every, None
    return tr.eval_every_steps, tr.eval_every_epochs


def evaluation_summary(cfg: DictConfig, held_out: int, steps_per_epoch: int, total_steps: int) -> str:
    """The setup summary's row: when, what it costs, what acts on it. Empty without a held-out set."""
    if not held_out:
        return ""
    steps = eval_steps(cfg, steps_per_epoch, total_steps)
    every_steps, every_epochs = cadence(cfg)
    when = " and ".join(w for w in (every_steps and f"every {every_steps} steps",
                                    every_epochs and f"every {every_epochs} epochs") if w)
    stop = cfg.trainer.early_stop
    return (f"{when} and at the end: {held_out} held-out samples x {len(steps)} evaluations x {len(TIMESTEPS)} "
            f"timesteps = {held_out * len(steps) * len(TIMESTEPS)} forward passes; the best checkpoint is kept"
            + (f"; early stop after {stop.patience} evaluations without a drop of {stop.min_delta:g}"
               if stop.patience else ""))


class Evaluation:
    """The loop asks it after every optimizer step; `on_new_best` callbacks get (step, checkpoint dir) once the
    loop has written the new best's checkpoint (the place to keep a loadable adapter of the best step)."""

    def __init__(self, cfg: DictConfig, held_out: HeldOutLoss, ema: AdapterEma, accelerator: Accelerator):
        self.held_out, self.ema, self.accelerator = held_out, ema, accelerator
        self.every_steps, self.every_epochs = cadence(cfg)
        self.patience, self.min_delta = cfg.trainer.early_stop.patience, cfg.trainer.early_stop.min_delta
        self.record = HeldOutRecord()
        self.on_new_best: List[Callable[[int, Path], None]] = []

    @property
    def enabled(self) -> bool:
        return self.held_out.enabled

    def due(self, step: int, epoch_ended: Optional[int], finished: bool) -> bool:
        return self.enabled and (finished or bool(self.every_steps) and step % self.every_steps == 0
                                 or bool(self.every_epochs) and epoch_ended is not None
                                 and epoch_ended % self.every_epochs == 0)

    def __call__(self, transformer: torch.nn.Module, step: int) -> bool:
        """Score the held-out set at `step` and log it; True when it is the best so far."""
        with self.ema.swapped_in(), self.accelerator.autocast():
            loss = self.held_out(transformer)
        new_best = self.record.add(step, loss, self.min_delta)
        noise = {} if self.held_out.noise is None else {"loss/val_noise": self.held_out.noise}
        self.accelerator.log({"loss/val": loss, **noise, "loss/val_best": self.record.best_loss,
                              "loss/val_best_step": self.record.best_step}, step=step)
        return new_best

    @property
    def stop_reason(self) -> Optional[str]:
        """Why the run ends before its last step, or None while it goes on."""
        r = self.record
        if self.patience is None or r.without_improvement < self.patience:
            return None
        return (f"early stop: {r.without_improvement} evaluations without a held-out loss {self.min_delta:g} below "
                f"the best ({r.best_loss:.4f} at step {r.best_step}; trainer.early_stop.patience={self.patience})")

    def announce_best(self, step: int, checkpoint: Path) -> None:
        for callback in self.on_new_best:
            callback(step, checkpoint)

    def load(self, checkpoint: Path) -> None:
        """A resume goes on with the checkpoint's record (none: a run without a held-out set until then)."""
        path = Path(checkpoint) / HELD_OUT_FILE
        try:
            self.record = HeldOutRecord(**json.loads(path.read_text())) if path.is_file() else HeldOutRecord()
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"{path}: not a held-out record ({first_line(err)}); resume from another "
                                  "checkpoint") from None

    def register_hooks(self, accelerator: Accelerator) -> None:
        """Every checkpoint holds the record (its digest in trainer_state.json); `load` takes it back."""
        if not self.enabled:
            return

        def save_hook(models, weights, output_dir):
            if accelerator.is_main_process:
                with atomic_file(Path(output_dir) / HELD_OUT_FILE) as tmp:
                    tmp.write_text(json.dumps(asdict(self.record), indent=1))

        accelerator.register_save_state_pre_hook(save_hook)
