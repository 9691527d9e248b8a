"""What the label analysis did: counts, one row per measured label and its fate, one line per failed file."""

from pathlib import Path
from typing import List, Tuple

from rich.markup import escape
from rich.table import Table

from sidestep.ui.console import console

STYLES = {"written": "green", "flagged": "yellow", "kept": "cyan", "same": "dim", "measured": ""}
EXPLAINED = {"written": "written", "flagged": "not written: low confidence", "kept": "kept: the sidecar's own value",
             "same": "unchanged", "measured": "not written (write=off)"}


def show_analysis(outcome) -> None:
    """`outcome`: an `analysis.run.AnalysisOutcome`."""
    counts = Table(title="Label analysis", show_header=False, title_justify="left")
    counts.add_column(style="bold")
    counts.add_column()
    counts.add_row("results", str(outcome.report))
    counts.add_row("analysed", str(len(outcome.analysed)))
    counts.add_row("skipped (same audio as before)", str(len(outcome.skipped)))
    counts.add_row("failed", str(len(outcome.failed)))
    console.print(counts)
    if outcome.changes:
        table = Table(title="Labels", title_justify="left")
        for column in ("song", "field", "sidecar had", "measured", "confidence", ""):
            table.add_column(column)
        for change in outcome.changes:
            style = STYLES[change.status]
            table.add_row(escape(change.song), change.field, escape(change.before or "-"), change.measured or "-",
                          f"{change.confidence:.2f}", f"[{style}]{EXPLAINED[change.status]}[/]" if style
                          else EXPLAINED[change.status])
        console.print(table)
    show_failures(outcome.failed)


def show_failures(failed: List[Tuple[Path, str]]) -> None:
    for path, reason in failed:  # whole lines, so paths stay intact in logs and narrow terminals
        console.print(f"failed: {path}: {reason}", soft_wrap=True, markup=False, highlight=False)
