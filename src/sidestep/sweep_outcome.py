"""How a failed job ends: recorded in its own folder, and in a sweep the other jobs still run.

A job that fails writes `status.json` with `"state": "failed"` and the one-line reason. In a `-m` sweep it then
raises `JobFailed`, which Hydra records as a failed job before it runs the next one (an Optuna trial is told
FAIL, never a value). Once the sweep is over, `FailedJobs` (a Hydra callback) or the entry point turns the failed
jobs into one `SweepFailed`, so the command exits 1 and names them.
"""

import time
from pathlib import Path
from typing import List, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sidestep.errors import SidestepError
from sidestep.run_files import load_yaml
from sidestep.run_status import read_status, write_status
from sidestep.write_errors import WRITE_ERRNOS, describe  # noqa: F401 (WRITE_ERRNOS: for the entry points)


class JobFailed(SidestepError):
    def __init__(self, run_dir: Path, reason: str):
        super().__init__(f"job {run_dir.name} failed: {reason}")
        self.run_dir = run_dir


class SweepFailed(SidestepError):
    exit_code = 1


def record_failure(run_dir: Path, err: BaseException, owns_status: bool) -> str:
    """Mark the run failed in its `status.json` (when this start owns the run: never for a refused resume of an
    earlier run, whose status stays true) and return the reason."""
    reason = describe(err)
    status = read_status(run_dir)
    # "finished" too: the adapter was written, then its last samples or report failed
    if owns_status and (status is None or status.get("state") in ("running", "finished")):
        try:
            write_status(run_dir, {**(status or {"step": 0}), "state": "failed", "error": reason,
                                   "updated_at": time.time()}, last=True)
        except OSError:
            pass  # the disk that failed the run cannot take this file either
    return reason


def failed_jobs(sweep_dir: Path) -> List[str]:
    """`"<job>: <reason>"` for each job of a sweep folder whose status says failed, in job order."""
    jobs = sorted((p for p in Path(sweep_dir).iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    return [f"{job.name} ({_overrides(job)}): {status.get('error')}" for job in jobs
            if (status := read_status(job)) and status.get("state") == "failed"]


def sweep_failed(sweep_dir: Path) -> SweepFailed:
    failures = failed_jobs(sweep_dir)
    jobs = sum(1 for p in Path(sweep_dir).iterdir() if p.is_dir() and p.name.isdigit())
    others = "; the others ran" if jobs > len(failures) else ": every job failed"
    return SweepFailed(f"sweep {sweep_dir} finished with {len(failures)} failed job(s){others}:\n  "
                       + "\n  ".join(failures))


class SweepEnded(BaseException):
    """Carries a `SidestepError` (failed jobs, a sweep refused or declined before it started) out of a Hydra
    callback: Hydra turns a callback's `Exception` into a warning."""

    def __init__(self, failure: SidestepError):
        super().__init__(str(failure))
        self.failure = failure


class FailedJobs(Callback):
    """After a sweep whose sweeper kept going past failed jobs (Optuna's `max_failure_rate`), end the command
    with the failed jobs named (see `sidestep.ui.app`). `started` is this process's sweep, for a sweeper that
    raises instead of ending (Optuna once every trial failed)."""

    started: Optional[Path] = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        FailedJobs.started = Path(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir() and failed_jobs(sweep_dir):
            raise SweepEnded(sweep_failed(sweep_dir))


def _overrides(job: Path) -> str:
    path = job / ".hydra" / "overrides.yaml"
    overrides = load_yaml(path) or []
    return " ".join(o for o in overrides if not o.startswith(("hydra.", "ui."))) or "defaults"
