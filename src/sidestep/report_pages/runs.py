"""What a run directory says about itself: its config and overrides, its state, its curves, its checkpoints.

Only training runs count: `sidestep.sample` and `sidestep.estimate` also leave a `.hydra/` folder (under a run's
`samples/`, or as their own output folder), and a report that listed them as runs would compare apples and songs.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sidestep.config.saved import plain_select, read_plain
from sidestep.config.yaml_data import load_yaml_data
from sidestep.errors import SidestepError
from sidestep.run_files import load_yaml
from sidestep.run_status import read_status

TRAIN_JOB = "train"
CURVE_TAGS = ("loss/smoothed", "loss/step", "loss/val", "loss/val_noise", "lr")
Curve = List[Tuple[int, float]]


def is_training_run(path: Path) -> bool:
    """A folder with Hydra's record of a `sidestep.train` job (rerun included: it runs the train task)."""
    hydra_dir = path / ".hydra"
    if not (hydra_dir / "config.yaml").is_file():
        return False
    if (hydra_dir / "hydra.yaml").is_file():
        return plain_select(read_plain(hydra_dir / "hydra.yaml"), "hydra.job.name") == TRAIN_JOB  # never resolved
    return "trainer" in load_yaml_data(hydra_dir / "config.yaml", record=True)  # no hydra.yaml: go by what the config holds


def find_runs(root: Path) -> List[Path]:
    """`root` itself when it is a run, else every training run below it (never one inside another run)."""
    if is_training_run(root):
        return [root]
    candidates = sorted({p.parent.parent for p in root.glob("**/.hydra/config.yaml")}, key=lambda p: _natural(p, root))
    runs: List[Path] = []
    for path in candidates:
        if not any(run in path.parents for run in runs) and is_training_run(path):
            runs.append(path)
    if not runs:
        raise SidestepError(f"{root}: no training runs found (no .hydra/ of a sidestep.train job below it)")
    return runs


def _natural(path: Path, root: Path):
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.relative_to(root).parts]


def overrides_of(run: Path) -> List[str]:
    """What was typed for this run, less `hydra.*` and `ui.*` (where output goes and how it looks)."""
    overrides = load_yaml(run / ".hydra" / "overrides.yaml") or []
    return [o for o in overrides if not o.startswith(("hydra.", "ui."))]


def overrides_text(run: Path) -> str:
    return " ".join(overrides_of(run)) or "(defaults)"


@dataclass
class RunInfo:
    path: Path
    label: str  # the run's path relative to the report's root ("." for the root itself)
    overrides: List[str]
    config: dict
    status: Optional[dict]
    curves: Dict[str, Curve] = field(default_factory=dict)
    checkpoints: List[Path] = field(default_factory=list)  # complete ones, oldest first
    adapter: Optional[Path] = None

    @property
    def state(self) -> str:
        if self.status:
            return self.status.get("state", "unknown")
        return "finished" if self.adapter else "not started"

    @property
    def error(self) -> Optional[str]:
        return (self.status or {}).get("error")

    def last(self, tag: str) -> Optional[float]:
        curve = self.curves.get(tag)
        return curve[-1][1] if curve else None

    @property
    def steps(self) -> int:
        steps = [curve[-1][0] for curve in self.curves.values() if curve]
        return max(steps) if steps else int((self.status or {}).get("step") or 0)

    @property
    def wall_seconds(self) -> Optional[float]:
        status = self.status or {}
        if status.get("started_at") is not None and status.get("updated_at") is not None:
            return status["updated_at"] - status["started_at"]
        return None


def read_curves(run: Path) -> Dict[str, Curve]:
    """{tag: [(step, value)]} for the tags a report draws, from the run's TensorBoard files."""
    if not (run / "tb").is_dir():
        return {}
    folders = sorted({p.parent for p in (run / "tb").glob("**/events.out.tfevents.*")})
    curves: Dict[str, Dict[int, float]] = {}
    for folder in folders:  # a resumed run may have written several files; a later value for a step wins
        events = EventAccumulator(str(folder), size_guidance={"scalars": 0}).Reload()
        for tag in CURVE_TAGS:
            if tag in events.Tags()["scalars"]:
                curves.setdefault(tag, {}).update({s.step: s.value for s in events.Scalars(tag)})
    return {tag: sorted(points.items()) for tag, points in curves.items()}


def read_run(run: Path, root: Path) -> RunInfo:
    adapter = run / "adapter" / "adapter_model.safetensors"
    checkpoints = sorted(p for p in (run / "checkpoints").glob("step-*") if (p / "trainer_state.json").is_file())
    return RunInfo(
        path=run,
        label=str(run.relative_to(root)) if run != root else ".",
        overrides=overrides_of(run),
        config=load_yaml(run / ".hydra" / "config.yaml") or {},
        status=read_status(run),
        curves=read_curves(run),
        checkpoints=checkpoints,
        adapter=adapter.parent if adapter.is_file() else None,
    )


def varying(runs: List[RunInfo]) -> List[str]:
    """The override keys whose value is not the same in every run, in the order they were typed."""
    typed = [dict(map(_split, run.overrides)) for run in runs]
    keys = dict.fromkeys(key for overrides in typed for key in overrides)
    return [key for key in keys if len({overrides.get(key) for overrides in typed}) > 1]


def settings(run: RunInfo, keys: List[str]) -> str:
    typed = dict(_split(o) for o in run.overrides)
    return " ".join(f"{k}={typed[k]}" for k in keys if k in typed) or "(defaults)"


def _split(override: str) -> Tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value
