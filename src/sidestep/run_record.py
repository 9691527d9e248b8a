"""A run's record (`<run>/.hydra/`: config.yaml, overrides.yaml, hydra.yaml) stays true to what trained.

Hydra writes the record of every start before any of our code runs. A start into a folder that already holds a
record -- a resume, or a refused fresh start -- would overwrite it even when it is then refused. So the
`record_dir` resolver (Hydra's `output_subdir`) sends such a start's record to `.hydra/attempt-<time>/`; only
when the resume actually starts is it promoted over `.hydra/`, and what was typed is appended to
`.hydra/history.yaml` (one entry per start). A refused attempt leaves nothing behind, and neither does a refused
first start: the run dir it made goes (`discard_refused`).
"""

import datetime
import logging
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Dict, Optional, Sequence, Set

from filelock import FileLock, Timeout
from omegaconf import OmegaConf

from sidestep.atomic import atomic_file
from sidestep.run_files import load_yaml
from sidestep.run_status import STATUS_FILE, read_status

RECORD = ".hydra"
RECORD_FILES = ("config.yaml", "overrides.yaml", "hydra.yaml")
HISTORY = "history.yaml"
LOCK_FILE = ".sidestep.lock"  # training/run_dir.py's
DATE_FOLDER, OUTPUTS_FOLDER = re.compile(r"\d{4}-\d{2}-\d{2}"), re.compile("outputs")  # conf/train.yaml's run dir
_claimed: Dict[str, str] = {}  # run dir -> the subdir this process's record goes to (asked several times)


def record_dir(output_dir: str) -> str:
    """Hydra's `output_subdir` for a run dir: `.hydra` when this start is the first there (claimed atomically, so
    of two starts at once only one gets it), else a private attempt folder beside it."""
    if output_dir not in _claimed:
        record = Path(output_dir) / RECORD
        record.mkdir(parents=True, exist_ok=True)
        try:
            os.close(os.open(record / "config.yaml", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            _claimed[output_dir] = RECORD
        except FileExistsError:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
            _claimed[output_dir] = f"{RECORD}/attempt-{stamp}-{os.getpid()}"
    return _claimed[output_dir]


def register_resolver() -> None:
    OmegaConf.register_new_resolver("sidestep_record_dir", record_dir, replace=True)


class RunRecord:
    """This start's record in `run_dir`: `subdir` is where Hydra wrote it (see `record_dir`)."""

    def __init__(self, run_dir: Path, subdir: Optional[str]):
        self.run_dir, self.subdir = Path(run_dir), subdir
        self.started = False

    @property
    def is_first(self) -> bool:
        """This start made the run dir's record (nothing was there before)."""
        return self.subdir == RECORD

    @property
    def folder(self) -> Optional[Path]:
        return None if self.subdir is None else self.run_dir / self.subdir

    def start(self, resumed_from: Optional[Path]) -> None:
        """Training really begins: this start's record becomes the run's, and the history grows by one entry."""
        self.started = True
        if self.subdir is None:
            return
        record = self.run_dir / RECORD
        if not self.is_first:
            for name in RECORD_FILES:
                if (self.folder / name).is_file():
                    with atomic_file(record / name) as tmp:
                        shutil.copyfile(self.folder / name, tmp)
            shutil.rmtree(self.folder, ignore_errors=True)
        history = load_yaml(record / HISTORY) or []
        history.append({"started_at": datetime.datetime.now().isoformat(timespec="seconds"),
                        "overrides": load_yaml(record / "overrides.yaml"),
                        "resumed_from": None if resumed_from is None else str(resumed_from)})
        with atomic_file(record / HISTORY) as tmp:
            tmp.write_text(OmegaConf.to_yaml(history))

    def discard_refused(self, log_name: str) -> bool:
        """A first start refused before it trained leaves no folder behind: the run dir goes when it holds only what
        this start wrote (the record, `<log_name>`, `status.json`, the lock). Returns whether it went."""
        if self.started or not self.is_first:
            return False
        return discard_folder(self.run_dir, {RECORD, log_name, STATUS_FILE, LOCK_FILE}, (DATE_FOLDER, OUTPUTS_FOLDER))

    def abandon(self) -> None:
        """A start that never trained: its attempt folder goes (a first start keeps its record, to say it failed)."""
        if not self.started and self.subdir is not None and not self.is_first:
            shutil.rmtree(self.folder, ignore_errors=True)


def discard_folder(folder: Path, made_here: Set[str], parents: Sequence[re.Pattern]) -> bool:
    """Remove the folder a refused command's Hydra run made, when it holds only `made_here` (the record, the log),
    then each parent in turn while it is empty and its name fits the next pattern (folders of our own naming, such
    as `outputs/<date>/`). Returns whether the folder went."""
    if not folder.is_dir() or any(p.name not in made_here for p in folder.iterdir()):
        return False
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        if Path(handler.baseFilename).parent == folder:  # closed first: Windows cannot delete an open file
            handler.close()
            root.removeHandler(handler)
    shutil.rmtree(folder, ignore_errors=True)
    parent = folder.parent
    for pattern in parents:
        if not (pattern.fullmatch(parent.name) and parent.is_dir()) or any(parent.iterdir()):
            break
        parent.rmdir()
        parent = parent.parent
    return not folder.exists()


def training_pid(run_dir: Path) -> Optional[int]:
    """The process training in `run_dir` on this machine, or None. Its status names it, and the run's lock must be
    held, so a pid the system has since given to another process is never taken for the run's."""
    status = read_status(run_dir) or {}
    pid = status.get("pid")
    if status.get("state") != "running" or status.get("host") != socket.gethostname() or not isinstance(pid, int):
        return None
    lock = FileLock(str(Path(run_dir) / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return pid
    lock.release()
    return None
