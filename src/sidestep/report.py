"""`python -m sidestep.report DIR`: compare the runs of a sweep (or look at one run).

Finds every run dir under DIR (a folder with `.hydra/config.yaml`), reads its overrides and its TensorBoard loss
curve, and prints a table sorted by final smoothed loss: overrides, final and best loss, steps, wall time,
adapter path. Writes `report.md`, `report.csv`, `sweep.json` and `loss_curves.png` into DIR.
"""

import csv
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional

from omegaconf import OmegaConf
from rich.table import Table

from sidestep.errors import SidestepError
from sidestep.ui.console import console, exit_on_user_error

LOSS_TAG = "loss/smoothed"


@dataclass
class RunRow:
    run: str
    overrides: str
    final_loss: Optional[float]
    best_loss: Optional[float]
    steps: int
    wall_seconds: Optional[float]
    adapter: Optional[str]
    curve: List[List[float]]  # [step, smoothed loss]


def find_runs(root: Path) -> List[Path]:
    runs = sorted({p.parent.parent for p in root.glob("**/.hydra/config.yaml")}, key=_natural)
    if not runs:
        raise SidestepError(f"{root}: no runs found (no .hydra/config.yaml below it)")
    return runs


def _natural(path: Path):
    return [int(part) if part.isdigit() else part for part in path.parts]


def overrides_text(run: Path) -> str:
    """What was typed for this run (less `hydra.*` and `ui.*`), or "(defaults)"."""
    overrides_file = run / ".hydra" / "overrides.yaml"
    overrides = OmegaConf.to_container(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
    return " ".join(o for o in overrides if not o.startswith(("hydra.", "ui."))) or "(defaults)"


def read_run(run: Path, root: Path) -> RunRow:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0}).Reload() if (run / "tb").is_dir() else None
    scalars = events.Scalars(LOSS_TAG) if events and LOSS_TAG in events.Tags()["scalars"] else []
    adapter = run / "adapter" / "adapter_model.safetensors"
    return RunRow(
        run=str(run.relative_to(root)) if run != root else ".",
        overrides=overrides_text(run),
        final_loss=scalars[-1].value if scalars else None,
        best_loss=min(s.value for s in scalars) if scalars else None,
        steps=scalars[-1].step if scalars else 0,
        wall_seconds=scalars[-1].wall_time - events.FirstEventTimestamp() if scalars else None,
        adapter=str(adapter.parent) if adapter.is_file() else None,
        curve=[[s.step, s.value] for s in scalars],
    )


def write_outputs(rows: List[RunRow], root: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = ["run", "overrides", "final_loss", "best_loss", "steps", "wall_seconds", "adapter"]
    with open(root / "report.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([[getattr(r, c) for c in columns] for r in rows])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(getattr(r, c)) for c in columns) + " |" for r in rows]
    (root / "report.md").write_text("\n".join(lines) + "\n")
    (root / "sweep.json").write_text(json.dumps([asdict(r) for r in rows], indent=2))
    fig, ax = plt.subplots(figsize=(9, 5))
    for row in rows:
        if row.curve:
            ax.plot(*zip(*row.curve), marker="o", markersize=3, label=f"{row.run}: {row.overrides}"[:80])
    ax.set(xlabel="optimizer step", ylabel="smoothed training loss", title=f"Loss curves: {root.name}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = root / "loss_curves.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def main(argv: List[str]) -> None:
    if len(argv) != 1:
        print("usage: python -m sidestep.report SWEEP_OR_RUN_DIR", file=sys.stderr)
        sys.exit(2)
    with exit_on_user_error():
        root = Path(argv[0]).resolve()
        rows = [read_run(run, root) for run in find_runs(root)]
        rows.sort(key=lambda r: (r.final_loss is None, r.final_loss or 0.0))
        png = write_outputs(rows, root)
    table = Table(title=f"{len(rows)} run(s) in {root}, best first")
    for column in ("run", "overrides", "final loss", "best loss", "steps", "wall s", "adapter"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r.run, r.overrides, _fmt(r.final_loss), _fmt(r.best_loss), str(r.steps),
                      _fmt(r.wall_seconds), r.adapter or "-")
    console.print(table)
    console.print(f"wrote report.md, report.csv, sweep.json and {png.name} to {root}")


if __name__ == "__main__":
    main(sys.argv[1:])
