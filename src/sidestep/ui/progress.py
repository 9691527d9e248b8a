"""Progress of training (a live rich bar in a terminal, a plain log line every `log_every` steps otherwise) and of
the sensitivity estimate's scoring."""

import math
import time
from typing import Callable, Optional

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from sidestep.step_rate import StepRate
from sidestep.ui.console import console, log, to_log_file
from sidestep.ui.monitor_view import duration


class TrainingProgress:
    """Speed and time left are measured over the last steps (`StepRate`); with the live bar, `train.log` still gets
    a step line every `log_every` steps."""

    def __init__(self, total_steps: int, epochs: int, plain: bool, log_every: int, enabled: bool = True,
                 clock: Callable[[], float] = time.perf_counter):
        self.total, self.epochs, self.plain, self.log_every = total_steps, epochs, plain, log_every
        self.enabled, self.clock = enabled, clock
        self.bar: Optional[Progress] = None
        self.rate = StepRate(total_steps)
        self.rate.start(0, clock())

    def __enter__(self) -> "TrainingProgress":
        if self.enabled and not self.plain:
            self.bar = Progress(TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
                                MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}"),
                                TextColumn("{task.fields[rate]:.2f} it/s"), TimeElapsedColumn(),
                                TextColumn("eta {task.fields[eta]}"), console=console, transient=False)
            self.bar.start()
            self.task = self.bar.add_task("train", total=self.total, epoch=0, epochs=self.epochs, loss=float("nan"),
                                          lr=0.0, rate=0.0, eta="?")
        return self

    def start_at(self, step: int) -> None:
        self.rate.start(step, self.clock())
        if self.bar is not None:
            self.bar.update(self.task, completed=step)

    def update(self, step: int, epoch: int, loss: float, lr: float) -> None:
        if not self.enabled:
            return
        self.rate.mark(step, self.clock())
        rate, left = self.rate.per_second, self.rate.seconds_left
        eta = "?" if math.isnan(left) else duration(left)
        if self.bar is not None:
            self.bar.update(self.task, completed=step, epoch=epoch + 1, loss=loss, lr=lr, rate=rate, eta=eta)
        if step % self.log_every == 0 or step == self.total:
            line = (f"step {step}/{self.total}  epoch {epoch + 1}/{self.epochs}  loss {loss:.4f}  lr {lr:.2e}  "
                    f"{rate:.2f} it/s  eta {eta}")
            if self.bar is None:
                log.info(line)
            else:
                to_log_file(line)

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
