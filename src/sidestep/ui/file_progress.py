"""Progress through a list of files by seconds of audio (a 4-minute song weighs four 1-minute ones), and the
table of what happened to each file at the end."""

import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from sidestep.ui.console import console, log, to_log_file


class FileProgress:
    def __init__(self, title: str, seconds: Sequence[float], plain: bool):
        self.title, self.total_files, self.total_seconds = title, len(seconds), float(sum(seconds))
        self.plain, self.files, self.done_seconds = plain, 0, 0.0
        self.started = time.perf_counter()
        self.bar: Optional[Progress] = None

    def __enter__(self) -> "FileProgress":
        if not self.plain and self.total_files:
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                TextColumn("{task.fields[files]}/{task.fields[total_files]} files"),
                                TextColumn("{task.completed:.0f}/{task.total:.0f} s of audio"),
                                TimeElapsedColumn(), TimeRemainingColumn(), console=console)
            self.bar.start()
            self.task = self.bar.add_task(self.title, total=max(self.total_seconds, 1e-9), files=0,
                                          total_files=self.total_files)
        return self

    def advance(self, seconds: float, name: str) -> None:
        self.files += 1
        self.done_seconds += seconds
        if self.bar is not None:
            self.bar.update(self.task, advance=seconds, files=self.files)
            return
        elapsed = time.perf_counter() - self.started
        rate = self.done_seconds / elapsed if elapsed > 0 else 0.0
        eta = (self.total_seconds - self.done_seconds) / rate if rate > 0 else float("nan")
        log.info("%s: %d/%d files (%s), %.0f/%.0f s of audio, eta %.0f s", self.title, self.files, self.total_files,
                 name, self.done_seconds, self.total_seconds, eta)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


def show_outcome(processed: List[str], skipped: List[str], failed: List[Tuple[Path, str]], out_dir: Path) -> None:
    """A table of counts, then one line per failed file with its reason."""
    table = Table(title="Preprocessing", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("output", str(out_dir))
    table.add_row("processed", str(len(processed)))
    table.add_row("skipped (already done)", str(len(skipped)))
    table.add_row("failed", str(len(failed)))
    console.print(table)
    for path, reason in failed:  # whole lines, so paths stay intact in logs and narrow terminals
        console.print(f"failed: {path}: {reason}", soft_wrap=True, markup=False, highlight=False)
    to_log_file("\n".join([f"Preprocessing: {out_dir}: {len(processed)} processed, {len(skipped)} skipped (already "
                           f"done), {len(failed)} failed"] + [f"  failed: {path}: {reason}" for path, reason in failed]))
