"""`python -m sidestep.monitor RUN_OR_SWEEP_DIR`: follow a training run, or every job of a sweep, from its files.

It reads only what a run writes (`status.json`, `tb/`, `checkpoints/`, `adapter/`, `.hydra/`, `train.log`), so it
works from another shell or over SSH, on a running or a finished run, and can never disturb the training process.
In a terminal it refreshes in place until Ctrl-C (a single run: until the run ends); with `ui.plain=true` or when
piped it prints one snapshot, or with `--follow` one snapshot every `--interval` seconds.
"""

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from omegaconf import OmegaConf
from rich.live import Live
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sidestep.config.schema import UIConfig
from sidestep.errors import SidestepError
from sidestep.report_pages.runs import overrides_text
from sidestep.run_files import if_present, load_yaml, mtime
from sidestep.run_status import STATUS_FILE, read_status
from sidestep.ui.console import console, exit_on_user_error, use_plain
from sidestep.ui.gpu import read_gauges
from sidestep.ui.monitor_view import render

TAGS = ("loss/smoothed", "loss/step", "loss/val", "lr", "grad_norm/total")
ENDED = ("finished", "stopped", "failed")


@dataclass
class RunSnapshot:
    path: Path
    label: str
    overrides: str
    status: Optional[dict]
    config: Optional[dict]
    scalars: Dict[str, List[Tuple[int, float]]] = field(default_factory=dict)  # tag -> [(step, value)]
    checkpoints: List[Tuple[str, float]] = field(default_factory=list)  # complete ones: (name, mtime), oldest first
    writing_checkpoint: Optional[str] = None
    adapter: Optional[Path] = None
    last_log_line: Optional[str] = None

    @property
    def state(self) -> str:
        if self.status:
            return self.status["state"]
        return "finished" if self.adapter else "no status"  # runs made before status.json existed


def is_run(path: Path) -> bool:
    return (path / ".hydra" / "config.yaml").is_file() or (path / STATUS_FILE).is_file()


def find_runs(root: Path) -> List[Path]:
    """`root` itself when it is a run; else the runs one to three levels below (sweep jobs, `outputs/<date>/<run>`,
    `outputs/<date>/sweep-<time>/<job>`)."""
    if is_run(root):
        return [root]
    found = [p for pattern in ("*", "*/*", "*/*/*") for p in root.glob(pattern) if p.is_dir() and is_run(p)]
    return sorted(found, key=lambda p: [int(x) if x.isdigit() else x for x in p.relative_to(root).parts])


class Reader:
    """Reads snapshots; keeps one TensorBoard reader per run so each refresh only reads what is new."""

    def __init__(self, root: Path):
        self.root = root
        self.events: Dict[Path, object] = {}

    def snapshot(self, run: Path) -> RunSnapshot:
        config_file = run / ".hydra" / "config.yaml"
        checkpoints_dir = run / "checkpoints"
        complete = [(p.name, when) for p in sorted(checkpoints_dir.glob("step-*"))
                    if (when := mtime(p / "trainer_state.json")) is not None]  # pruned meanwhile: skipped
        writing = sorted(checkpoints_dir.glob(".tmp-step-*"))
        adapter = run / "adapter"
        return RunSnapshot(
            path=run,
            label=str(run.relative_to(self.root)) if run != self.root else run.name,
            overrides=overrides_text(run),
            status=read_status(run),
            config=load_yaml(config_file),
            scalars=self._scalars(run),
            checkpoints=complete,
            writing_checkpoint=writing[-1].name.removeprefix(".tmp-") if writing else None,
            adapter=adapter if (adapter / "adapter_config.json").is_file() else None,
            last_log_line=_last_line(run / "train.log"),
        )

    def _scalars(self, run: Path) -> Dict[str, List[Tuple[int, float]]]:
        tb = run / "tb"
        if not tb.is_dir():
            return {}
        if run not in self.events:
            self.events[run] = EventAccumulator(str(tb), size_guidance={"scalars": 0})
        events = self.events[run].Reload()
        present = events.Tags()["scalars"]
        return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in TAGS if tag in present}


def _last_line(path: Path) -> Optional[str]:
    lines = [line for line in (if_present(lambda: _tail(path)) or "").splitlines() if line.strip()]
    return lines[-1] if lines else None


def _tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, 2) - 4096))
        return f.read().decode("utf-8", "replace")


def view(reader: Reader) -> Tuple[object, bool]:
    """What to show now, and whether following can stop (a single run that has ended)."""
    runs = find_runs(reader.root)
    snapshots = [reader.snapshot(run) for run in runs]
    single = runs == [reader.root]
    return render(reader.root, snapshots, read_gauges(), time.time(), single), single and snapshots[0].state in ENDED


def parse_args(argv: List[str]) -> Tuple[argparse.Namespace, UIConfig]:
    parser = argparse.ArgumentParser(prog="python -m sidestep.monitor",
                                     description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("dir", type=Path, help="a run dir, a sweep dir (one line per job) or a folder of runs")
    parser.add_argument("settings", nargs="*", default=[], help="ui.plain=true: no colour or live display")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--follow", action="store_true", help="keep refreshing (default in a terminal)")
    mode.add_argument("--once", action="store_true", help="print one snapshot and exit (default when plain or piped)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (2)")
    args = parser.parse_args(argv)
    unknown = [s for s in args.settings if not s.startswith("ui.")]
    if unknown:
        parser.error(f"unknown setting {unknown[0]!r}: the monitor takes ui.plain=true")
    try:
        ui = OmegaConf.merge(OmegaConf.structured(UIConfig), OmegaConf.from_dotlist([s[3:] for s in args.settings]))
    except Exception as err:  # omegaconf's ValidationError family: unknown key or not a boolean
        parser.error(str(err).splitlines()[0])
    return args, ui


def main(argv: List[str]) -> None:
    args, ui = parse_args(argv)
    with exit_on_user_error():
        root = args.dir.resolve()
        if not root.is_dir():
            raise SidestepError(f"{args.dir} is not a folder; pass a run dir (outputs/<date>/<time>) or a sweep dir")
        plain = use_plain(ui.plain)
        follow = args.follow or (not args.once and not plain)
        reader = Reader(root)
        if not follow and not find_runs(root):
            raise SidestepError(f"{root}: no runs found (no .hydra/config.yaml or {STATUS_FILE} in it or below it)")
        try:
            if not follow:
                console.print(view(reader)[0])
            elif plain:
                _follow_plain(reader, args.interval)
            else:
                _follow_live(reader, args.interval)
        except KeyboardInterrupt:
            pass  # leaving the monitor is the normal way out; the run goes on


def _follow_plain(reader: Reader, interval: float) -> None:
    while True:
        shown, ended = view(reader)
        console.print(f"--- {time.strftime('%H:%M:%S')}")
        console.print(shown)
        if ended:
            return
        time.sleep(interval)


def _follow_live(reader: Reader, interval: float) -> None:
    shown, ended = view(reader)
    with Live(shown, console=console, auto_refresh=False) as live:
        while not ended:
            time.sleep(interval)
            shown, ended = view(reader)
            live.update(shown, refresh=True)


if __name__ == "__main__":
    main(sys.argv[1:])
