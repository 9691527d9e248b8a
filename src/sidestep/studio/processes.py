"""The commands the studio starts: always `python -m sidestep.<entry>` with a list of arguments (never a shell
string), their output in a file the page tails. Stopping a run is what Ctrl-C does: SIGINT to its process, which
finishes the step, writes a checkpoint and marks the run `stopped`."""

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from sidestep.errors import SidestepError
from sidestep.report_pages.runs import overrides_of
from sidestep.run_record import training_pid
from sidestep.studio.runs import CONSOLE_LOG, LOG_LINES

ENTRIES = ("train", "export", "sample", "preprocess")
PLAIN = "ui.plain=true"
PLAIN_VALUE = re.compile(r"/[A-Za-z0-9_./@+-]*")  # an absolute path Hydra reads as this very string, unquoted
TERMINAL = [PLAIN, "ui.yes=true"]  # nobody at a terminal: plain lines, no question


def command(entry: str, args: List[str]) -> List[str]:
    if entry not in ENTRIES:
        raise SidestepError(f"{entry}: the studio starts only sidestep.{', sidestep.'.join(ENTRIES)}")
    return [sys.executable, "-m", f"sidestep.{entry}", *args]


def shown(argv: List[str]) -> str:
    """The command line as a user would type it."""
    return shlex.join(["python", *argv[1:]])


@dataclass
class Task:
    """One started command: its output goes to `log` (in the folder it works on), its exit code once done."""

    argv: List[str]
    log: Path
    process: subprocess.Popen

    @property
    def returncode(self) -> Optional[int]:
        return self.process.poll()

    def as_dict(self) -> dict:
        lines = self.log.read_text(errors="replace").splitlines()[-LOG_LINES:] if self.log.is_file() else []
        return {"command": shown(self.argv), "running": self.returncode is None, "returncode": self.returncode,
                "output": lines}


class Processes:
    """The commands this studio started, by the folder they work on (a run, a sweep, a dataset)."""

    def __init__(self):
        self.tasks: Dict[str, Task] = {}
        self._lock = threading.Lock()

    def start(self, key: str, entry: str, args: List[str], log: Path, cwd: Path) -> Task:
        with self._lock:
            running = self.tasks.get(key)
            if running is not None and running.returncode is None:
                raise SidestepError(f"{key}: a command is still running there ({shown(running.argv)})")
            argv = command(entry, args)
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "ab") as out:
                out.write(f"$ {shown(argv)}\n".encode())
                out.flush()
                process = self.launch(argv, out, cwd)
            self.tasks[key] = Task(argv, log, process)
            return self.tasks[key]

    def launch(self, argv: List[str], out, cwd: Path) -> subprocess.Popen:
        """The process of one command, its output and errors to `out`."""
        # its own session: a Ctrl-C at the studio's terminal reaches it once, from `close`, not twice
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)

    def stop(self, key: str, run_dir: Path) -> None:
        """Ctrl-C for the run: to the command the studio started, else to the process training in `run_dir` on
        this machine (a run started in a terminal)."""
        task = self.tasks.get(key)
        if task is not None and task.returncode is None:
            task.process.send_signal(signal.SIGINT)
            return
        pid = training_pid(run_dir)
        if pid is None or sys.platform == "win32":  # Windows has no SIGINT for another console's process
            raise SidestepError(f"{key}: no run is training there on this machine that the studio can stop (stop it "
                                "with Ctrl-C in its terminal)")
        os.kill(pid, signal.SIGINT)

    def get(self, key: str) -> Optional[Task]:
        return self.tasks.get(key)

    def close(self) -> None:
        """The studio is going away: running commands get the clean stop, so each leaves a checkpoint."""
        for task in self.tasks.values():
            if task.returncode is None:
                task.process.send_signal(signal.SIGINT)
        for task in self.tasks.values():
            task.process.wait()


def quoted(text: str) -> str:
    """A free text or a path as one Hydra value: as it is when plain, else quoted, so spaces, commas, brackets and
    `${` stay literal (Hydra's grammar: backslashes before a quote or at the end doubled, quotes and `${` escaped)."""
    if PLAIN_VALUE.fullmatch(text):
        return text
    text = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, text)
    return "'" + text.replace("'", "\\'").replace("${", "\\${") + "'"


def train_args(overrides: List[str], folder: Path, sweep: bool) -> List[str]:
    where = f"hydra.sweep.dir={quoted(str(folder))}" if sweep else f"hydra.run.dir={quoted(str(folder))}"
    return [*(["-m"] if sweep else []), *overrides, *TERMINAL, where]


def resume_args(run: Path) -> List[str]:
    """The run's own overrides, into its own folder, from its newest checkpoint (what `stopped` prints)."""
    kept = [o for o in overrides_of(run) if not o.startswith("resume_from=")]
    return [*kept, *TERMINAL, f"hydra.run.dir={quoted(str(run))}", "resume_from=latest"]


def console_log(folder: Path) -> Path:
    return folder / CONSOLE_LOG
