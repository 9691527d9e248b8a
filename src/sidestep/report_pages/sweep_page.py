"""A sweep (or any folder of runs) compared: `report.html`, `report.md`, `report.csv`, `sweep.json` and
`loss_curves.png` in its folder.

One row per run with only the settings that vary, its state (a failed job with its reason), final smoothed and
held-out loss; the best run (lowest held-out loss, else lowest final training loss) is marked.
"""

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from sidestep.atomic import atomic_file
from sidestep.report_pages.charts import sweep_curves
from sidestep.report_pages.listening import read_samples
from sidestep.report_pages.page import esc, href, state_badge, table, write_page
from sidestep.report_pages.run_page import PAGE
from sidestep.report_pages.runs import RunInfo, settings, varying

COLUMNS = ["run", "overrides", "state", "final_loss", "held_out_loss", "best_loss", "steps", "wall_seconds", "adapter"]


@dataclass
class Row:
    run: RunInfo
    settings: str  # only what varies between the runs

    @property
    def final_loss(self) -> Optional[float]:
        return self.run.last("loss/smoothed")

    @property
    def held_out_loss(self) -> Optional[float]:
        return self.run.last("loss/val")

    @property
    def state(self) -> str:
        return f"{self.run.state}: {self.run.error}" if self.run.error else self.run.state

    def values(self) -> dict:
        curve = self.run.curves.get("loss/smoothed") or []
        wall = self.run.wall_seconds
        return {"run": self.run.label, "overrides": " ".join(self.run.overrides) or "(defaults)", "state": self.state,
                "final_loss": self.final_loss, "held_out_loss": self.held_out_loss,
                "best_loss": min(v for _, v in curve) if curve else None, "steps": self.run.steps,
                "wall_seconds": None if wall is None else round(wall, 1),
                "adapter": str(self.run.adapter) if self.run.adapter else None}


def by_held_out(rows: List[Row]) -> bool:
    return any(r.held_out_loss is not None for r in rows)


def score(row: Row, held_out: bool) -> Optional[float]:
    return row.held_out_loss if held_out else row.final_loss


def rank(runs: List[RunInfo]) -> List[Row]:
    """Rows best first: by held-out loss when runs have one, else by final training loss; runs without a loss
    (failed before logging) last."""
    keys = varying(runs)
    rows = [Row(r, settings(r, keys)) for r in runs]
    held_out = by_held_out(rows)
    return sorted(rows, key=lambda r: (score(r, held_out) is None, score(r, held_out) or 0.0))


def best(rows: List[Row]) -> Optional[Row]:
    """The first of `rank`'s rows, when it has a loss at all and, ranked by held-out loss, beats the next one by
    more than the held-out loss's noise (the standard error of their difference)."""
    held_out = by_held_out(rows)
    if len(rows) < 2 or score(rows[0], held_out) is None:
        return None  # a lone run is best of nothing
    if fmt(score(rows[0], held_out)) == fmt(score(rows[1], held_out)):
        return None  # a tie, as the table shows them
    return None if too_close(rows) else rows[0]


def why_no_best(rows: List[Row]) -> str:
    """Why runs that were compared have no best (empty when one is marked, or there was nothing to compare)."""
    if too_close(rows):
        return "the first two differ by less than the held-out loss's noise"
    if len(rows) > 1 and best(rows) is None and score(rows[0], by_held_out(rows)) is not None:
        return "the first two tie"
    return ""


def too_close(rows: List[Row]) -> bool:
    """The two best held-out losses differ by less than their noise: neither is better on this evidence."""
    if len(rows) < 2 or not by_held_out(rows) or rows[1].held_out_loss is None:
        return False
    noises = [r.run.last("loss/val_noise") for r in rows[:2]]
    if any(n is None for n in noises):
        return False
    return rows[1].held_out_loss - rows[0].held_out_loss <= (noises[0] ** 2 + noises[1] ** 2) ** 0.5


def write_tables(rows: List[Row], root: Path) -> None:
    values = [r.values() for r in rows]
    with atomic_file(root / "report.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(values)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt(v[c], c) for c in COLUMNS) + " |" for v in values]
    with atomic_file(root / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    with atomic_file(root / "sweep.json") as tmp:
        tmp.write_text(json.dumps([{**v, "curve": r.run.curves.get("loss/smoothed", []),
                                    "held_out_curve": r.run.curves.get("loss/val", [])}
                                   for v, r in zip(values, rows)], indent=2))


def fmt(value, column: str = "") -> str:
    if value is None:
        return "-"
    if column == "wall_seconds":
        return f"{value:.0f}"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_sweep_page(rows: List[Row], root: Path) -> Path:
    """The comparison page; every run's own page must exist beside it (`write_run_page`)."""
    winner = best(rows)
    keys = varying([r.run for r in rows])
    chart = sweep_curves([r.run for r in rows], [r.settings if keys else r.run.label for r in rows],
                         winner.run if winner else None, f"{len(rows)} runs in {root.name}", root / "loss_curves.png")
    common = sorted({o for r in rows for o in r.run.overrides if all(o in x.run.overrides for x in rows)})
    body_rows, classes = [], []
    for row in rows:
        page = Path(row.run.label) / PAGE if row.run.label != "." else Path(PAGE)
        body_rows.append([f'<a href="{href(page)}">{esc(row.run.label)}</a>' + (" ★ best" if row is winner else ""),
                          f"<code>{esc(row.settings)}</code>", state_badge(row.run.state, row.run.error),
                          f'<span class="num">{esc(fmt(row.final_loss))}</span>',
                          f'<span class="num">{esc(fmt(row.held_out_loss))}</span>', str(row.run.steps),
                          esc(fmt(row.run.wall_seconds, "wall_seconds")), _latest_samples(row.run, root)])
        classes.append("best" if row is winner else "")
    criterion = "held-out loss" if by_held_out(rows) else "final smoothed training loss"
    body = [f"<h1>{esc(root.name)}: {len(rows)} runs</h1>",
            f"<p>Common to all: <code>{esc(' '.join(common) or '(nothing)')}</code></p>",
            f"<p>Best first, by {criterion}" + (f"; the best is <b>{esc(winner.run.label)}</b>" if winner else "")
            + (f"; {why_no_best(rows)}, so none is marked best" if why_no_best(rows) else "")
            + ". Each run's newest samples play here; its page has them all.</p>",
            table(["run", "varies", "state", "final loss", "held-out loss", "steps", "wall s", "latest samples"],
                  body_rows, classes),
            "<h2>Loss curves</h2>", f'<img class="chart" src="{href(chart.relative_to(root))}" alt="loss curves">']
    return write_page(root / PAGE, f"{root.name}: Side-Step sweep", "\n".join(body))


def _latest_samples(run: RunInfo, root: Path) -> str:
    """A player per prompt of the run's newest round of training samples."""
    rounds = [s for s in read_samples(run.path) if s.step is not None]
    if not rounds:
        return "-"
    step = max(s.step for s in rounds)
    folder = run.path.relative_to(root)
    return "".join(f'<figure class="mini"><figcaption>{esc(s.info["prompt"])} · step {step}</figcaption>'
                   f'<audio controls preload="metadata" src="{href(folder / s.wav)}"></audio></figure>'
                   for s in rounds if s.step == step)
