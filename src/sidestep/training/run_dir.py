"""One run per run dir: a fresh start never mixes with an earlier run's files, and two processes never train into
the same folder at once."""

import contextlib
from pathlib import Path
from typing import Iterator, List, Optional

from filelock import FileLock, Timeout

from sidestep.errors import SidestepError
from sidestep.run_record import LOCK_FILE
from sidestep.run_status import read_status
from sidestep.training.checkpoint import CHECKPOINTS


def earlier_run(run_dir: Path) -> List[str]:
    """What in `run_dir` belongs to a run that trained: its checkpoints, its adapter, steps in its status."""
    found = [name for name in (CHECKPOINTS, "adapter") if (run_dir / name).exists()]
    status = read_status(run_dir)
    if status and status.get("step"):
        found.append(f"status.json at step {status['step']}")
    return found


@contextlib.contextmanager
def claimed(run_dir: Path, resume_from: Optional[str], enabled: bool = True) -> Iterator[None]:
    """Hold `run_dir` for this process while it trains. A fresh start into a folder holding an earlier run, or a
    resume from another run's checkpoint into it, is refused: pruning and `resume_from=latest` would mix the two."""
    if not enabled:  # other processes of a multi-process run share the main process's claim
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise SidestepError(f"{run_dir}: another Side-Step process is training in this folder; wait for it to end, "
                            "or train into another folder (hydra.run.dir=...)") from None
    try:
        found = earlier_run(run_dir)
        foreign = resume_from not in (None, "latest", "best") and run_dir.resolve() not in Path(resume_from).resolve().parents
        if found and (resume_from is None or foreign):
            what = "start afresh" if resume_from is None else f"resume from {resume_from}"
            raise SidestepError(f"{run_dir} already holds a run ({', '.join(found)}); cannot {what} there: continue it "
                                "with resume_from=latest, or train into another folder (hydra.run.dir=...)")
        yield
    finally:
        lock.release()
