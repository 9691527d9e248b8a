"""Reports on runs: each run's listening page (`report.html`) and the comparison of a sweep's runs.

`python -m sidestep.report RUN_OR_SWEEP` writes them (`sidestep/report.py`); training rewrites its run's page as it goes.
"""

from sidestep.report_pages.runs import find_runs, overrides_text

__all__ = ["find_runs", "overrides_text"]
