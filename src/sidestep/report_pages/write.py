"""Writing every report of a folder at once: each training run's page, and the comparison of the runs."""

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from sidestep.report_pages.run_page import write_run_page
from sidestep.report_pages.runs import find_runs, read_run
from sidestep.report_pages.sweep_page import Row, best, rank, write_sweep_page, write_tables


@dataclass
class Report:
    root: Path
    rows: List[Row]  # best first
    page: Optional[Path]  # the comparison page; None when the root is itself a single run

    @property
    def best(self) -> Optional[Row]:
        return best(self.rows)


def write_report(root: Path) -> Report:
    """`report.html` of every training run below `root` (a run, a sweep or a folder of runs), and in `root` the
    comparison: `report.md`, `report.csv`, `sweep.json`, and for several runs `report.html` and `loss_curves.png`."""
    runs = find_runs(root)
    infos = [read_run(run, root) for run in runs]
    for info in infos:
        write_run_page(info)
    rows = rank(infos)
    write_tables(rows, root)
    page = write_sweep_page(rows, root) if runs != [root] else None
    return Report(root, rows, page)
