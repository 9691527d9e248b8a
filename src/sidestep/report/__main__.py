"""`python -m sidestep.report DIR`: the listening page of a run, or of every run of a sweep plus their comparison.

DIR is one run, a sweep, or any folder of runs (`outputs/`): every training run below it gets its `report.html`
written again, and DIR gets the comparison (`report.html`, `report.md`, `report.csv`, `sweep.json`,
`loss_curves.png`); a table of the runs is printed, best first.
"""

import sys
from pathlib import Path
from typing import List

from rich.table import Table

from sidestep.report.run_page import PAGE, write_run_page
from sidestep.report.runs import find_runs, read_run
from sidestep.report.sweep_page import fmt, rank, write_sweep_page, write_tables
from sidestep.ui.console import console, exit_on_user_error
from sidestep.ui.help import answer_help, usage_and_about


def main(argv: List[str]) -> None:
    answer_help(argv, usage_and_about("python -m sidestep.report RUN_OR_SWEEP_DIR", __doc__))
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m sidestep.report RUN_OR_SWEEP_DIR", file=sys.stderr)
        sys.exit(2)
    with exit_on_user_error():
        root = Path(argv[0]).resolve()
        runs = find_runs(root)
        infos = [read_run(run, root) for run in runs]
        for info in infos:
            write_run_page(info)
        rows = rank(infos)
        write_tables(rows, root)
        page = root / PAGE if runs != [root] else None
        if page is not None:
            write_sweep_page(rows, root)
    held_out = any(r.held_out_loss is not None for r in rows)
    table = Table(title=f"{len(rows)} run(s) in {root}, best first")
    for column in ("run", "varies" if len(rows) > 1 else "overrides", "state", "final", *["held-out"] * held_out,
                   "steps", "wall s"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r.run.label, r.settings if len(rows) > 1 else " ".join(r.run.overrides), r.state,
                      fmt(r.final_loss), *[fmt(r.held_out_loss)] * held_out, str(r.run.steps),
                      fmt(r.run.wall_seconds, "wall_seconds"))
    console.print(table)
    pages = f"{len(runs)} run page(s) and {page}" if page else str(root / PAGE)
    tables = "report.md, report.csv, sweep.json" + (" and loss_curves.png" if page else "")
    console.print(f"wrote {pages}; {tables} in {root}",
                  markup=False, highlight=False, soft_wrap=True)


if __name__ == "__main__":
    main(sys.argv[1:])
