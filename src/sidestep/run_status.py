"""`<run>/status.json`: where a run stands, for `python -m sidestep.monitor`, which only reads files.

TensorBoard holds the curves but not the plan (total steps, epochs) nor whether the run is still going, so the
main process writes this small file when training starts, every `trainer.log_every` steps, at each checkpoint and
when it stops: `state` is `running`, then `finished` (adapter written), `stopped` (signal, checkpoint written) or
`failed` (with `error`, the one-line reason; also for a start refused before training, see `sidestep.train`).
With a held-out set, `val_loss`, `best_step` and `best_val_loss` after each evaluation; a run ended by early
stopping is `finished` with its `stop_reason`.
`pid` and `host` name the training process, so the studio can stop a run started in a terminal.
It is written under a temporary name and renamed, so a reader never sees half of it (but for the last write on a
full disk, see `write_status`). A failure's `error` is `write_errors.describe`'s line.
"""

import json
import os
import socket
import time
from pathlib import Path
from typing import Optional

from sidestep.atomic import atomic_file
from sidestep.errors import Interrupted
from sidestep.write_errors import FULL, describe

STATUS_FILE = "status.json"


class RunStatus:
    def __init__(self, run_dir: Path, total_steps: int, epochs: int, first_step: int, log_every: int, enabled: bool):
        self.path, self.enabled, self.log_every = Path(run_dir) / STATUS_FILE, enabled, log_every
        self.started, self.first_step = time.time(), first_step
        self.fields = {"state": "running", "step": first_step, "total_steps": total_steps, "epoch": None,
                       "epochs": epochs, "loss": None, "lr": None, "it_per_s": None, "eta_s": None,
                       "started_at": self.started, "pid": os.getpid(), "host": socket.gethostname()}

    def __enter__(self) -> "RunStatus":
        self._write()
        return self

    def update(self, step: int, epoch: int, loss: float, lr: float) -> None:
        """Call after every optimizer step; writes on logging steps and the last one (a stop writes the rest)."""
        rate = (step - self.first_step) / max(time.time() - self.started, 1e-9)
        eta = (self.fields["total_steps"] - step) / rate if rate > 0 else None
        self.fields.update(step=step, epoch=epoch + 1, loss=_number(loss), lr=lr, it_per_s=rate, eta_s=eta)
        if step % self.log_every == 0 or step == self.fields["total_steps"]:
            self._write()

    def checkpoint(self, path: Path) -> None:
        self._write(checkpoint=str(path))

    def held_out(self, record) -> None:
        """After an evaluation (`training.evaluation.HeldOutRecord`): the held-out loss and the best step so far."""
        self._write(val_loss=record.loss, best_step=record.best_step, best_val_loss=record.best_loss)

    def finished(self, adapter_dir: Path, stop_reason: Optional[str] = None) -> None:
        """`stop_reason`: why it ended before its last step (early stopping); a finished run all the same."""
        extra = {} if stop_reason is None else {"stop_reason": stop_reason}
        self._write(last=True, state="finished", eta_s=0.0, adapter=str(adapter_dir), **extra)

    def __exit__(self, kind, error, traceback) -> None:
        if error is None:
            return
        stopped = isinstance(error, (Interrupted, KeyboardInterrupt))
        try:
            self._write(last=True, state="stopped" if stopped else "failed", eta_s=None, error=describe(error))
        except OSError:  # the disk that failed the run cannot take this file either; the error itself goes on
            pass

    def _write(self, last: bool = False, **changes) -> None:
        self.fields.update(changes, updated_at=time.time())
        if self.enabled:
            write_status(self.path.parent, self.fields, last)


def write_status(run_dir: Path, fields: dict, last: bool = False) -> None:
    """`last`: how the run ended. A disk too full for a temporary copy then gets it written over the old status
    (the same few hundred bytes fit in the space the old one holds), so the run never stays `running`."""
    path, text = Path(run_dir) / STATUS_FILE, json.dumps(fields, indent=1)
    try:
        with atomic_file(path, durable=last) as tmp:  # rewritten every few steps: no wait for the disk but at the end
            tmp.write_text(text)
    except OSError as err:
        if not (last and err.errno in FULL and path.is_file()):
            raise
        with open(path, "r+", encoding="utf-8") as f:
            f.write(text)
            f.truncate()


def read_status(run_dir: Path) -> Optional[dict]:
    """The run's last status, or None when it has none (not started yet, or made before status files existed)."""
    try:
        return json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


def _number(value: float) -> Optional[float]:
    return None if value != value else value  # NaN (nothing logged yet) is not JSON
