"""The runs under the served folders as the page shows them, read with the report's readers (`report/runs.py`)
and `run_status`, which cope with a run that changes while it is read."""

import asyncio
import json
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, Dict, List, Optional, Tuple

from sidestep.errors import SidestepError
from sidestep.report.runs import RunInfo, find_runs, read_curves, read_run
from sidestep.run_files import load_yaml
from sidestep.run_status import STATUS_FILE, read_status
from sidestep.studio.security import Folders

CONSOLE_LOG = "studio-console.log"  # what a process the studio started printed (the one-line error included)
LOG_LINES = 40
WATCH_SECONDS = 0.5


class RunRows:
    """Every training run under every served folder, newest first; a run is read again only when its files
    changed, so a page that follows a folder of many runs costs little."""

    def __init__(self, folders: Folders):
        self.folders = folders
        self._read: Dict[Path, Tuple[tuple, dict]] = {}

    def __call__(self) -> List[dict]:
        rows = []
        for root in self.folders.roots:
            try:
                runs = find_runs(root)
            except SidestepError:  # a folder with no run yet
                continue
            for run in runs:
                signature = _signature(run)
                if self._read.get(run, (None,))[0] != signature:
                    self._read[run] = signature, run_row(read_run(run, root), self.folders)
                rows.append(self._read[run][1])
        return sorted(rows, key=lambda row: row["started"], reverse=True)


def run_row(info: RunInfo, folders: Folders) -> dict:
    config, status = info.config, info.status or {}
    sweep = info.path.parent if (info.path.parent / "multirun.yaml").is_file() else None
    return {
        "ref": folders.ref(info.path),
        "name": run_name(config, info.path),
        "folder": str(info.path),
        "sweep": folders.ref(sweep) if sweep else None,
        "state": info.state,
        "error": info.error,
        "step": status.get("step", info.steps),
        "total_steps": status.get("total_steps"),
        "eta_s": status.get("eta_s"),
        "adapter": _choice(info.path, "adapter") or str((config.get("adapter") or {}).get("_target_", "")),
        "rank": (config.get("adapter") or {}).get("rank"),
        "lr": (config.get("optimizer") or {}).get("lr"),
        "loss": info.last("loss/smoothed") if info.last("loss/smoothed") is not None else status.get("loss"),
        "val_loss": info.last("loss/val"),
        "overrides": info.overrides,
        "started": status.get("started_at") or (info.path / ".hydra").stat().st_mtime,
        "has_report": (info.path / "report.html").is_file(),
        "checkpoints": [c.name for c in info.checkpoints],
    }


def run_name(config: dict, run: Path) -> str:
    """The run's `run.name` as saved; its folder's name when the config was saved unresolved (a refused start)."""
    name = (config.get("run") or {}).get("name")
    return name if isinstance(name, str) and "${" not in name else run.name


def _choice(run: Path, group: str) -> Optional[str]:
    choices = (((load_yaml(run / ".hydra" / "hydra.yaml") or {}).get("hydra") or {}).get("runtime") or {}).get("choices")
    choice = (choices or {}).get(group)
    return choice if isinstance(choice, str) else None


def log_tail(run: Path) -> List[str]:
    lines: List[str] = []
    for name in ("train.log", CONSOLE_LOG):
        path = run / name
        if path.is_file():
            lines += path.read_text(errors="replace").splitlines()[-LOG_LINES:]
    return lines[-LOG_LINES:]


def snapshot(run: Path) -> dict:
    """What the run page draws: status, curves, the log's tail, its checkpoints, exported files and samples."""
    name = run_name(load_yaml(run / ".hydra" / "config.yaml") or {}, run)
    return {"name": name, "folder": str(run), "status": read_status(run) or {},
            "curves": read_curves(run), "log": log_tail(run), "has_report": (run / "report.html").is_file(),
            "checkpoints": sorted((p.name for p in (run / "checkpoints").glob("step-*")
                                   if (p / "trainer_state.json").is_file()), key=lambda n: int(n[5:])),
            "exports": _files(run, "adapter/**/*") + _files(run, "adapters/**/*"),  # the final one, then each step's
            "samples": _files(run, "samples/**/*.wav")}


def _files(run: Path, pattern: str) -> List[str]:
    return sorted(p.relative_to(run).as_posix() for p in run.glob(pattern) if p.is_file() and not p.is_symlink())


def _signature(run: Path) -> tuple:
    """Changes when anything the page draws changed on disk."""
    files = [run / STATUS_FILE, run / "train.log", run / CONSOLE_LOG, run / "report.html", run / ".hydra",
             *sorted(run.glob("tb/**/events.out.tfevents.*")), *sorted(run.glob("checkpoints/step-*/*")),
             *sorted(run.glob("adapter/**/*")), *sorted(run.glob("samples/**/*.wav"))]
    return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.exists())


async def run_events(run: Path, gone: Callable[[], Awaitable[bool]], extra: Callable[[], dict]
                     ) -> AsyncIterator[str]:
    """Server-sent events: one `data:` snapshot each time the run's files (or `extra()`, what the studio knows of
    its process) change, until the page goes away."""
    seen = None
    while not await gone():
        signature = (await asyncio.to_thread(_signature, run), extra())
        if signature != seen:
            seen = signature
            data = {**await asyncio.to_thread(snapshot, run), **signature[1]}
            yield f"data: {json.dumps(data)}\n\n"
        await asyncio.sleep(WATCH_SECONDS)
