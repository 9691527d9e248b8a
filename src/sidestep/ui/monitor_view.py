"""What `sidestep.monitor` draws: one run in detail, or one line per run of a sweep; the GPU gauge under either.

Only text and rich tables, so it reads the same in a live terminal, a plain SSH session and a log file.
"""

import sys
from functools import partial
from pathlib import Path
from typing import List, Optional, Sequence

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from sidestep.adapters.label import adapter_words
from sidestep.ui.gpu import GpuGauge

UNICODE = (sys.stdout.encoding or "").lower().replace("-", "") in ("utf8", "utf16")
SPARKS = "▁▂▃▄▅▆▇█" if UNICODE else "_.-~=+*#"
FULL, EMPTY = ("█", "░") if UNICODE else ("#", "-")
STALE_AFTER = 300.0  # seconds without an update before a "running" run is flagged
STYLES = {"running": "cyan", "running?": "yellow", "finished": "green", "stopped": "yellow", "failed": "red"}


def render(root: Path, runs: Sequence, gauges: List[GpuGauge], now: float, single: bool):
    parts = [run_detail(runs[0], now) if single else run_lines(root, runs, now)]
    parts += [Text(f"gpu {g.index}  {g.describe()}") for g in gauges]
    return Group(*parts)


def run_detail(run, now: float) -> Table:
    status, cfg, scalars = run.status or {}, run.config, run.scalars
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    add = partial(_add, table)
    add("run", str(run.path))
    add("state", Text(state_text(run, now), style=STYLES.get(state_word(run, now), "")))
    if cfg:
        add("setup", setup_text(cfg))
    step, total = status.get("step"), status.get("total_steps")
    if step is None and "loss/smoothed" in scalars:
        step = scalars["loss/smoothed"][-1][0]  # no status file: the last logged step
    if step is not None:
        epoch = f"  epoch {status['epoch']}/{status['epochs']}" if status.get("epoch") else ""
        add("progress", f"{bar(step, total)}step {step}/{total or '?'}{epoch}")
    if status.get("it_per_s"):
        ended = run.state != "running"
        elapsed = (status["updated_at"] if ended else now) - status["started_at"]
        eta = "" if ended or status.get("eta_s") is None else f"  ETA {duration(status['eta_s'])}"
        add("speed", f"{status['it_per_s']:.2f} it/s  elapsed {duration(elapsed)}{eta}")
    curve = [value for _, value in scalars.get("loss/smoothed", [])]
    if curve:
        extra = "".join(f"  {name} {scalars[tag][-1][1]:.4f}" for name, tag in (("last step", "loss/step"),
                                                                                  ("held-out", "loss/val"))
                        if tag in scalars)
        add("loss", f"{curve[-1]:.4f} smoothed (first {curve[0]:.4f}, best {min(curve):.4f}){extra}")
        steps = scalars["loss/smoothed"]
        add("curve", f"{sparkline(curve)}  steps {steps[0][0]}-{steps[-1][0]}")
    if "lr" in scalars:
        norm = f"  grad norm {scalars['grad_norm/total'][-1][1]:.3f}" if "grad_norm/total" in scalars else ""
        add("lr", f"{scalars['lr'][-1][1]:.2e}{norm}")
    add("checkpoint", checkpoint_text(run, now))
    if status.get("best_step") is not None:
        add("best", f"step {status['best_step']}, held-out loss {status['best_val_loss']:.4f} (kept; resume_from=best, "
                    "sidestep.export RUN --from best)")
    if run.adapter:
        add("adapter", str(run.adapter))
    if run.last_log_line:
        add("log", run.last_log_line)
    return table


def _add(table: Table, *cells) -> None:
    """Cells as plain text: paths, overrides and log lines may hold brackets that rich would read as markup."""
    table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in cells))


def run_lines(root: Path, runs: Sequence, now: float):
    counts = {}
    for run in runs:
        counts[run.state] = counts.get(run.state, 0) + 1
    title = f"{root}: {len(runs)} run(s)" + (f", {', '.join(f'{n} {s}' for s, n in counts.items())}" if runs else
                                             ", waiting for the first one")
    table = Table(title=Text(title), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("run", "state", "step", "loss", "it/s", "ETA", "checkpoint", "overrides"):
        table.add_column(name, overflow="fold", no_wrap=name != "overrides")
    for run in runs:
        status = run.status or {}
        curve = run.scalars.get("loss/smoothed")
        step = status.get("step", curve[-1][0] if curve else None)
        eta = status.get("eta_s") if run.state == "running" else None
        word = state_word(run, now)
        _add(table, run.label, Text(word, style=STYLES.get(word, "")),
             "-" if step is None else f"{step}/{status.get('total_steps', '?')}",
             f"{curve[-1][1]:.4f}" if curve else "-",
             f"{status['it_per_s']:.2f}" if status.get("it_per_s") else "-",
             "-" if eta is None else duration(eta),
             run.checkpoints[-1][0] if run.checkpoints else "-", run.overrides)
    return table


def state_word(run, now: float) -> str:
    status = run.status or {}
    if run.state == "running" and now - status.get("updated_at", now) > stale_after(run):
        return "running?"
    return run.state


def state_text(run, now: float) -> str:
    status = run.status or {}
    word = state_word(run, now)
    stopped_early = f" ({status['stop_reason']})" if status.get("stop_reason") else ""
    detail = {"finished": (f": adapter written to {run.adapter}" if run.adapter else "") + stopped_early,
              "stopped": f": {status.get('error', '')}", "failed": f": {status.get('error', '')}",
              "running?": ": no update for a while; the process may have died"}.get(word, "")
    age = f" (updated {duration(now - status['updated_at'])} ago)" if "updated_at" in status else ""
    return f"{word}{detail}{age}"


def stale_after(run) -> float:
    """Ten logging intervals, and at least five minutes."""
    status, cfg = run.status or {}, run.config or {}
    rate, log_every = status.get("it_per_s"), cfg.get("trainer", {}).get("log_every", 10)
    return max(STALE_AFTER, 10 * log_every / rate) if rate else STALE_AFTER


def setup_text(cfg: dict) -> str:
    adapter, tr, opt = cfg.get("adapter", {}), cfg.get("trainer", {}), cfg.get("optimizer", {})
    optimizer = str(opt.get("_target_", "?")).rsplit(".", 1)[-1]
    length = f"{tr.get('epochs')} epochs" + (f", at most {tr['max_steps']} steps" if tr.get("max_steps") else "")
    return (f"model {cfg.get('model', {}).get('variant', '?')}, "
            f"{adapter_words(cfg)} on {'+'.join(adapter.get('target_modules', []))}, {optimizer} lr {opt.get('lr'):g}, "
            f"batch {tr.get('batch_size')} x {tr.get('gradient_accumulation')}, {length}")


def checkpoint_text(run, now: float) -> str:
    if not run.checkpoints:
        text = "none yet"
    else:
        name, mtime = run.checkpoints[-1]
        text = f"{name} ({duration(now - mtime)} ago; {len(run.checkpoints)} kept)"
    return text + (f", writing {run.writing_checkpoint}" if run.writing_checkpoint else "")


def bar(step: int, total: Optional[int], width: int = 30) -> str:
    if not total:
        return ""
    done = round(width * min(step / total, 1.0))
    return f"{FULL * done}{EMPTY * (width - done)} {100 * step / total:3.0f}%  "


def sparkline(values: List[float], width: int = 40) -> str:
    """The loss curve in one line: `width` evenly spaced points, scaled between their min and max."""
    if len(values) > width:
        values = [values[round(i * (len(values) - 1) / (width - 1))] for i in range(width)]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    line = "".join(SPARKS[round((v - low) / span * (len(SPARKS) - 1))] for v in values)
    return f"{line}  {values[0]:.3f} -> {values[-1]:.3f}"


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
