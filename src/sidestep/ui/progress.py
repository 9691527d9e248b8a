"""Progress of training (a live rich bar in a terminal, a plain log line every `log_every` steps otherwise) and of
the sensitivity estimate's scoring."""

import time
from typing import Optional

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from sidestep.ui.console import console, log


class TrainingProgress:
    def __init__(self, total_steps: int, epochs: int, plain: bool, log_every: int, enabled: bool = True):
        self.total, self.epochs, self.plain, self.log_every = total_steps, epochs, plain, log_every
        self.enabled = enabled
        self.bar: Optional[Progress] = None
        self.started = time.perf_counter()
        self.first_step = 0

    def __enter__(self) -> "TrainingProgress":
        if self.enabled and not self.plain:
            self.bar = Progress(TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
                                MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}"),
                                TextColumn("{task.fields[rate]:.2f} it/s"), TimeElapsedColumn(), TimeRemainingColumn(),
                                console=console, transient=False)
            self.bar.start()
            self.task = self.bar.add_task("train", total=self.total, epoch=0, epochs=self.epochs, loss=float("nan"),
                                          lr=0.0, rate=0.0)
        return self

    def start_at(self, step: int) -> None:
        self.first_step = step
        self.started = time.perf_counter()
        if self.bar is not None:
            self.bar.update(self.task, completed=step)

    def update(self, step: int, epoch: int, loss: float, lr: float) -> None:
        if not self.enabled:
            return
        rate = (step - self.first_step) / max(time.perf_counter() - self.started, 1e-9)
        if self.bar is not None:
            self.bar.update(self.task, completed=step, epoch=epoch + 1, loss=loss, lr=lr, rate=rate)
        elif step % self.log_every == 0 or step == self.total:
            eta = (self.total - step) / rate if rate > 0 else float("nan")
            log.info("step %d/%d  epoch %d/%d  loss %.4f  lr %.2e  %.2f it/s  eta %.0fs",
                     step, self.total, epoch + 1, self.epochs, loss, lr, rate, eta)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


class BatchProgress:
    """Batches scored by the sensitivity estimate: a live bar in a terminal, nothing when plain."""

    def __init__(self, total: int, plain: bool):
        self.total, self.plain = total, plain

    def __enter__(self) -> "BatchProgress":
        self.bar = Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            console=console, disable=self.plain)
        self.bar.start()
        self.task = self.bar.add_task("batches", total=self.total)
        return self

    def update(self, done: int) -> None:
        self.bar.update(self.task, completed=done)

    def __exit__(self, *exc) -> None:
        self.bar.stop()
