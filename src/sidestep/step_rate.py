"""Speed and time left of a run, over its last steps: a sample round or a slow first step moves the estimate a
little for a while, not from 6 minutes to 38 seconds and back."""

import collections
import math

WINDOW_STEPS = 100  # minutes of a real run: a sample round averages in, a lasting change shows soon


class StepRate:
    def __init__(self, total_steps: int, window: int = WINDOW_STEPS):
        self.total = total_steps
        self.marks = collections.deque(maxlen=window + 1)  # (step, time) of the last `window` steps and the one before

    def start(self, step: int, now: float) -> None:
        """Count from `step` (a resumed run's first): the steps before it were not run here."""
        self.marks.clear()
        self.marks.append((step, now))

    def mark(self, step: int, now: float) -> None:
        self.marks.append((step, now))

    @property
    def per_second(self) -> float:
        """Steps per second over the window; 0 until a step has been timed."""
        (first, started), (last, now) = self.marks[0], self.marks[-1]
        return (last - first) / (now - started) if last > first and now > started else 0.0

    @property
    def seconds_left(self) -> float:
        """NaN until a step has been timed."""
        rate = self.per_second
        return (self.total - self.marks[-1][0]) / rate if rate > 0 else math.nan
