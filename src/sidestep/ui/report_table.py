"""The table of runs a report prints, best first and the best marked, and where the pages went."""

from rich.table import Table

from sidestep.report_pages.run_page import PAGE
from sidestep.report_pages.sweep_page import fmt, why_no_best
from sidestep.report_pages.write import Report
from sidestep.ui.console import console


def print_report(report: Report) -> None:
    rows, winner = report.rows, report.best
    held_out = any(r.held_out_loss is not None for r in rows)
    table = Table(title=f"{len(rows)} run{'s' if len(rows) != 1 else ''}, best first")  # the folder: last line, whole
    for column in ("run", "varies" if len(rows) > 1 else "overrides", "state", "final", *["held-out"] * held_out,
                   "steps", "wall s"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r.run.label + (" ★ best" if r is winner else ""),
                      r.settings if len(rows) > 1 else " ".join(r.run.overrides), r.state,
                      fmt(r.final_loss), *[fmt(r.held_out_loss)] * held_out, str(r.run.steps),
                      fmt(r.run.wall_seconds, "wall_seconds"), style="bold" if r is winner else None)
    console.print(table)
    if why_no_best(rows):
        console.print(f"{why_no_best(rows)}: none is marked best",
                      markup=False, highlight=False)
    pages = f"{len(rows)} run page(s) and {report.page}" if report.page else str(report.root / PAGE)
    tables = "report.md, report.csv, sweep.json" + (" and loss_curves.png" if report.page else "")
    console.print(f"wrote {pages}; {tables} in {report.root}", markup=False, highlight=False, soft_wrap=True)
