"""`<run>/report.html`: the page to pick the best checkpoint by ear.

Setup at a glance, where the run stands, its loss and learning-rate curves, then for each prompt a row of players
across checkpoints (each with its spectrogram and links to the adapter kept at that step) beside the same seed
without the adapter, the strengths
`sidestep.sample compare=true` rendered, and for each checkpoint the command that samples more from it or exports it.
Training rewrites it after every round of samples and at the end; `python -m sidestep.report RUN` at any time.
"""

import logging
import shlex
import time
from functools import partial
from pathlib import Path
from typing import List, Optional

from safetensors import safe_open

from sidestep.adapters.label import adapter_words
from sidestep.report.charts import run_curves
from sidestep.report.listening import ASSETS, PromptRow, Sample, prompt_rows, read_samples, spectrogram
from sidestep.report.page import esc, href, state_badge, table, write_page
from sidestep.report.step_adapters import adapter_links
from sidestep.report.runs import RunInfo, read_run
from sidestep.run_files import if_present
from sidestep.write_errors import is_write_error

PAGE = "report.html"
log = logging.getLogger(__name__)


def write_run_page(run: RunInfo) -> Path:
    curves = run_curves(run.curves, run.path / ASSETS / "curves.png")
    rows = prompt_rows(run.path, read_samples(run.path))
    body = [f"<h1>{esc(run.path.name)} {state_badge(run.state, run.error)}</h1>", _status(run),
            "<h2>Setup</h2>", _setup(run), "<h2>Curves</h2>",
            f'<img class="chart" src="{href(curves.relative_to(run.path))}" alt="loss and learning-rate curves">'
            if curves else "<p>No steps logged yet.</p>",
            "<h2>Listening</h2>", _listening(run, rows), "<h2>Checkpoints</h2>", _checkpoints(run)]
    return write_page(run.path / PAGE, f"{run.path.name}: Side-Step run", "\n".join(body))


def refresh_run_page(run_dir: Path) -> None:
    """For training: rewrite the page, and never let a report problem stop a run (a full or read-only disk does)."""
    try:
        write_run_page(read_run(Path(run_dir), Path(run_dir).parent))
    except Exception as err:  # the page is a view on the run, never a reason to stop it
        if is_write_error(err):
            raise
        log.warning("report.html not updated: %s", (str(err).splitlines() or [type(err).__name__])[0])


def _status(run: RunInfo) -> str:
    s = run.status or {}
    parts = []
    if s.get("total_steps"):
        parts.append(f"step {s.get('step')}/{s['total_steps']}, epoch {s.get('epoch') or 0}/{s.get('epochs')}")
    if run.last("loss/smoothed") is not None:
        parts.append(f"smoothed loss {run.last('loss/smoothed'):.4f}")
    if run.last("loss/val") is not None:
        parts.append(f"held-out loss {run.last('loss/val'):.4f}")
    if s.get("state") == "running" and s.get("eta_s") is not None:
        parts.append(f"about {_duration(s['eta_s'])} to go")
    if run.wall_seconds is not None:
        parts.append(f"{_duration(run.wall_seconds)} of training")
    if s.get("updated_at"):
        parts.append("status of " + time.strftime("%Y-%m-%d %H:%M", time.localtime(s["updated_at"])))
    return f"<p>{esc(' · '.join(parts)) or 'No status yet.'}</p>"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _setup(run: RunInfo) -> str:
    cfg = run.config
    model, adapter, data = cfg.get("model", {}), cfg.get("adapter", {}), cfg.get("data", {})
    tr, opt, sched = cfg.get("trainer", {}), cfg.get("optimizer", {}), cfg.get("scheduler", {})
    arch = model.get("arch", {})
    size = _adapter_size(run)
    rows = [
        ("model", f"{model.get('variant')} ({arch.get('num_hidden_layers')} layers, hidden {arch.get('hidden_size')})"
                  + (f", {model['checkpoint_dir']}" if model.get("checkpoint_dir") else "")),
        ("adapter", f"{adapter_words(cfg)}, "
                    + (f"dropout {_number(adapter['dropout'])}, " if "dropout" in adapter else "")
                    + f"{'+'.join(adapter.get('target_modules', []))} on {'+'.join(cfg.get('attention', {}).get('blocks', []))}"
                    + (f", rank map {adapter['rank_map']}" if adapter.get("rank_map") else "") + (f"; {size}" if size else "")),
        ("dataset", _dataset(data, cfg.get("preprocess", {}))),
        ("training", f"{str(opt.get('_target_', '')).rsplit('.', 1)[-1]} lr {opt.get('lr')}, "
                     f"{str(sched.get('_target_', '')).rsplit('.', 1)[-1]} with {sched.get('warmup_steps')} warm-up steps, "
                     f"batch {tr.get('batch_size')} x {tr.get('gradient_accumulation')}, {tr.get('epochs')} epochs"
                     + (f" (at most {tr['max_steps']} steps)" if tr.get("max_steps") else "") + f", seed {tr.get('seed')}"),
        ("typed", " ".join(run.overrides) or "(defaults)"),
    ]
    return table([], [[esc(k), f"<code>{esc(v)}</code>" if k == "typed" else esc(v)] for k, v in rows])


def _number(value) -> str:
    """32.0 -> "32"; null (a run that failed before its config was resolved) stays "None"."""
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _dataset(data: dict, preprocess: dict) -> str:
    if data.get("synthetic"):
        s = data["synthetic"]
        return f"synthetic: {s.get('num_samples')} generated songs of {s.get('seconds')} s"
    source = f" (preprocessed from {preprocess['audio_dir']})" if preprocess.get("audio_dir") else ""
    held_out = f", {data['val_fraction']:g} held out" if data.get("val_fraction") else ""
    return f"{data.get('dataset_dir')}{source}{held_out}"


def _adapter_size(run: RunInfo) -> Optional[str]:
    """Parameters and bytes of the LoRA tensors, read from the newest weights file's header."""
    candidates = ([run.adapter / "adapter_model.safetensors"] if run.adapter else []) + \
                 [c / "adapter_model.safetensors" for c in reversed(run.checkpoints)]
    return next((size for p in candidates if (size := if_present(partial(_file_size, p))) is not None), None)


def _file_size(weights: Path) -> str:
    with safe_open(str(weights), framework="numpy") as f:
        count = sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())
    return f"{count:,} parameters, {weights.stat().st_size / 2**20:.1f} MiB"


def _numel(shape: List[int]) -> int:
    total = 1
    for n in shape:
        total *= n
    return total


def _listening(info: RunInfo, rows: List[PromptRow]) -> str:
    run, kept = info.path, {c.name for c in _kept(info)}
    if not rows:
        return ("<p>No samples yet: <code>sample.every_n_epochs</code> or <code>sample.every_n_steps</code> renders them "
                "while training; <code>python -m sidestep.sample &lt;run&gt; compare=true</code> afterwards.</p>")
    parts = []
    for row in rows:
        info = next(s for s in [*row.by_step, row.without, *sum(row.strengths.values(), [])] if s is not None).info
        parts.append(f"<h3>{esc(row.prompt)}</h3><p class=\"meta\">lyrics: {esc(row.lyrics[:120])} · seed "
                     f"{esc(info.get('seed'))} · {esc(info.get('duration'))} s · {esc(info.get('steps'))} steps, "
                     f"guidance {esc(info.get('guidance'))}, shift {esc(info.get('shift'))}</p>")
        cells = []
        if row.without is not None:
            cells.append(_player(run, row.without, f"without the adapter (seed {row.without.info.get('seed')})", "base"))
        cells += [_player(run, s, f"step {s.step}" + ("" if not kept or f"step-{s.step:07d}" in kept
                                                      else " (no checkpoint kept)"), links=adapter_links(run, s.step))
                  for s in row.by_step]
        parts.append(f'<div class="row">{"".join(cells)}</div>')
        for source, renders in row.strengths.items():
            strengths = [_player(run, s, f"{source} at strength {s.strength:g}") for s in renders]
            parts.append(f"<p class=\"meta\">{esc(source)} at other strengths</p><div class=\"row\">{''.join(strengths)}</div>")
    return "\n".join(parts)


def _player(run: Path, sample: Sample, caption: str, kind: str = "", links: str = "") -> str:
    picture = spectrogram(run, sample.wav)
    return (f'<figure class="{kind}"><figcaption>{esc(caption)}</figcaption>'
            f'<audio controls preload="metadata" src="{href(sample.wav)}"></audio>'
            f'<a href="{href(sample.wav)}"><img src="{href(picture)}" alt="spectrogram of {esc(caption)}"></a>'
            f'{links}</figure>')


def _checkpoints(run: RunInfo) -> str:
    """One command per checkpoint, typed from inside the run folder (so it still works after the folder moves)."""
    rows = []
    for checkpoint in reversed(_kept(run)):
        name = checkpoint.relative_to(run.path).as_posix()
        rows.append([f"<code>{esc(name)}</code>", _command(
            ["python", "-m", "sidestep.sample", name, "compare=true", "compare_strengths=[0.5,1.5]"])])
    if run.adapter is not None:
        rows.insert(0, ["<code>adapter/</code> (final)", _command(["python", "-m", "sidestep.export", "adapter",
                                                                    "--format", "all"])])
    if not rows:
        return "<p>No checkpoint yet.</p>"
    return ("<p class=\"meta\">Run these from this run's folder. A checkpoint's samples with and without the adapter "
            "and at other strengths appear above when this page is written again.</p>"
            + table(["weights", "command"], rows))


def _kept(run: RunInfo) -> List[Path]:
    """The checkpoints still there as the page is written: training prunes old ones while it runs."""
    return [c for c in run.checkpoints if (c / "trainer_state.json").is_file()]


def _command(words: List[str]) -> str:
    return f'<code class="cmd">{esc(shlex.join(words))}</code>'
