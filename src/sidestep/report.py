"""`python -m sidestep.report DIR`: the listening page of a run, or of every run of a sweep plus their comparison.

DIR is one run, a sweep, or any folder of runs (`outputs/`): every training run below it gets its `report.html`
written again, and DIR gets the comparison (`report.html`, `report.md`, `report.csv`, `sweep.json`,
`loss_curves.png`); a table of the runs is printed, best first.
"""

import sys
from pathlib import Path
from typing import List

from sidestep.report_pages.write import write_report
from sidestep.ui.console import exit_on_user_error
from sidestep.ui.help import answer_help, usage_and_about
from sidestep.ui.report_table import print_report


def main(argv: List[str]) -> None:
    answer_help(argv, usage_and_about("python -m sidestep.report RUN_OR_SWEEP_DIR", __doc__))
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m sidestep.report RUN_OR_SWEEP_DIR", file=sys.stderr)
        sys.exit(2)
    with exit_on_user_error():
        report = write_report(Path(argv[0]).resolve())
    print_report(report)


if __name__ == "__main__":
    main(sys.argv[1:])
