"""The pictures of a report, as small PNG files beside the page (matplotlib figures without pyplot: no display,
no backend to choose, nothing to close)."""

from pathlib import Path
from typing import Dict, List, Optional

from matplotlib.figure import Figure

from sidestep.atomic import atomic_file
from sidestep.report_pages.runs import Curve, RunInfo


def _save(fig: Figure, path: Path) -> Path:
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return path


def run_curves(curves: Dict[str, Curve], path: Path) -> Optional[Path]:
    """Loss (each step faint, smoothed, held-out) and the step size, side by side; None when nothing was logged."""
    if not any(curves.get(t) for t in ("loss/smoothed", "loss/step", "loss/val", "lr")):
        return None
    fig = Figure(figsize=(10, 3.4))
    loss_ax, lr_ax = fig.subplots(1, 2)
    for tag, label, style in (("loss/step", "each logged step", dict(alpha=0.3, linewidth=1)),
                              ("loss/smoothed", "training (smoothed)", dict(linewidth=2)),
                              ("loss/val", "held-out", dict(marker="o", linewidth=2))):
        if curves.get(tag):
            loss_ax.plot(*zip(*curves[tag]), label=label, **style)
    loss_ax.set(xlabel="optimizer step", ylabel="loss", title="loss")
    loss_ax.legend(fontsize=8)
    if curves.get("lr"):
        lr_ax.plot(*zip(*curves["lr"]), color="tab:green")
    lr_ax.set(xlabel="optimizer step", ylabel="step size", title="learning rate (Prodigy: d x lr)")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    fig.tight_layout()
    return _save(fig, path)


def sweep_curves(runs: List[RunInfo], labels: List[str], best: Optional[RunInfo], title: str, path: Path) -> Path:
    """Every run's smoothed training loss (and held-out loss, dashed) on one plot; the legend names what varies."""
    fig = Figure(figsize=(9, 4.5))
    ax = fig.subplots()
    for run, label in zip(runs, labels):
        mark = " (best)" if run is best else ""
        if run.curves.get("loss/smoothed"):
            line, = ax.plot(*zip(*run.curves["loss/smoothed"]), marker="o", markersize=3,
                            linewidth=3 if mark else 1.5, label=f"{label}{mark}"[:80])
            if run.curves.get("loss/val"):
                ax.plot(*zip(*run.curves["loss/val"]), linestyle="--", color=line.get_color(),
                        label=f"{label} held-out"[:80])
    ax.set(xlabel="optimizer step", ylabel="loss", title=f"{title} (solid: smoothed training, dashed: held-out)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
