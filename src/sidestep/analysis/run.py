"""A folder of songs, analysed: measure each song once (parallel over the cores), keep every result in the folder's
`analysis.json`, and write the confident values into the sidecars under the chosen policy.

A song whose audio has the same hash as in `analysis.json` is not measured again, so an interrupted run is simply
started again, and changing the policy costs no analysis. `analysis.json` is rewritten (atomically) after each
song. Nothing here prints: the caller passes in the progress display and shows the outcome.
"""

import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from omegaconf import DictConfig

from sidestep.analysis.sidecar_edit import Sidecar
from sidestep.analysis.song import analyse_file
from sidestep.atomic import atomic_file
from sidestep.data.audio_files import audio_seconds, find_audio
from sidestep.digest import file_hash
from sidestep.errors import DataError
from sidestep.preprocessing.sidecars import read_json

REPORT = "analysis.json"
VERSION = 1  # bump when an estimator changes, so every song is measured again
# Sidecar field <- (the analysis entry, the option holding its threshold)
WRITTEN = {"bpm": ("bpm", "min_bpm_confidence"), "keyscale": ("key", "min_key_confidence"),
           "timesignature": ("signature", "min_signature_confidence")}

Progress = Callable[[str, Sequence[float]], Any]  # (title, each file's seconds) -> a display with .advance(s, name)


@dataclass(frozen=True)
class Change:
    song: str
    field: str
    before: Optional[str]
    measured: Optional[str]
    confidence: float
    status: str  # written | same | kept (the sidecar's own value) | flagged (low confidence) | measured (write=off)


@dataclass
class AnalysisOutcome:
    report: Path
    analysed: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)  # measured before, same audio
    failed: List[Tuple[Path, str]] = field(default_factory=list)
    changes: List[Change] = field(default_factory=list)


def analyse_folder(folder: Path, policy: str, settings: DictConfig, force: bool, progress: Progress
                   ) -> AnalysisOutcome:
    """Measure every song under `folder` not measured yet, then apply `policy` to the sidecars of all of them."""
    folder = Path(folder)
    files, unsupported = find_audio(folder)
    outcome = AnalysisOutcome(folder / REPORT)
    outcome.failed += [(p, f"{p.suffix} files cannot be decoded (copy-protected); convert it to WAV or FLAC")
                       for p in unsupported]
    if not files and not unsupported:
        raise DataError(f"{folder}: no audio files found (WAV, FLAC, OGG or MP3)")
    entries = _read_report(outcome.report)
    todo: List[Tuple[Path, str, str]] = []
    for path in files:
        name = path.relative_to(folder).as_posix()
        try:
            digest = file_hash(path)
        except OSError as err:
            outcome.failed.append((path, f"unreadable ({err.strerror or err})"))
            continue
        old = entries.get(name, {})
        if not force and old.get("source_hash") == digest and "analysis" in old:
            outcome.skipped.append(name)
        else:
            todo.append((path, name, digest))
    _measure(todo, entries, outcome, settings, progress)
    for path in files:
        name = path.relative_to(folder).as_posix()
        if name in entries and "analysis" in entries[name] and (name in outcome.analysed or name in outcome.skipped):
            try:
                _apply(path, name, entries[name], policy, settings, outcome)
            except DataError as err:
                outcome.failed.append((path, _reason(err, path)))
    present = {path.relative_to(folder).as_posix() for path in files}
    _write_report(outcome.report, {name: entry for name, entry in entries.items() if name in present})
    return outcome


def _measure(todo: List[Tuple[Path, str, str]], entries: Dict[str, dict], outcome: AnalysisOutcome,
             settings: DictConfig, progress: Progress) -> None:
    """Measure the songs in `todo`, one process per worker (in this one for a single worker)."""
    if not todo:
        return
    seconds = {path: _seconds(path) for path, _, _ in todo}
    workers = min(len(todo), settings.workers or os.cpu_count() or 1)
    with progress("analysing tempo, key and metre", list(seconds.values())) as shown:
        if workers == 1:
            _collect(((item, _analysed(item[0])) for item in todo), seconds, entries, outcome, shown)
            return
        with ProcessPoolExecutor(workers) as pool:
            futures = {pool.submit(_analysed, item[0]): item for item in todo}
            _collect(((futures[f], f.result()) for f in as_completed(futures)), seconds, entries, outcome, shown)


def _collect(results, seconds: Dict[Path, float], entries: Dict[str, dict], outcome: AnalysisOutcome, shown) -> None:
    """Each finished song into `entries` (and analysis.json, so an interruption keeps it), or its one-line reason."""
    for (path, name, digest), (analysis, error) in results:
        if error is not None:
            outcome.failed.append((path, _reason(error, path)))
        else:
            entries[name] = {"source_hash": digest, "analysis": analysis, "written": entries.get(name, {}).get(
                "written", {})}
            outcome.analysed.append(name)
            _write_report(outcome.report, entries)
        shown.advance(seconds[path], name)


def _analysed(path: Path) -> Tuple[Optional[dict], Optional[DataError]]:
    """One song's analysis as JSON, or the DataError that says why it could not be (returned: it crosses processes)."""
    try:
        return analyse_file(path).as_json(), None
    except DataError as err:
        return None, DataError(str(err))


def _apply(path: Path, name: str, entry: dict, policy: str, settings: DictConfig, outcome: AnalysisOutcome) -> None:
    """Write the confident values into the song's sidecar under `policy`, recording each field's fate."""
    sidecar = Sidecar.open(path)
    written = entry.setdefault("written", {})
    for field_name, (measured_key, option) in WRITTEN.items():
        measured = entry["analysis"][measured_key]
        value, confidence = measured["value"], measured["confidence"]
        before = sidecar.value(field_name)
        text = _as_label(field_name, value)
        if value is None or confidence < settings[option]:
            status = "flagged"
        elif policy == "off":
            status = "measured"
        elif before is not None and _typed(field_name, text) == before:
            status = "same"
        elif before is None or policy == "overwrite" or written.get(field_name) == before:
            sidecar.set(field_name, text)
            written[field_name] = _typed(field_name, text)
            status = "written"
        else:
            status = "kept"
        outcome.changes.append(Change(name, field_name, None if before is None else str(before), text, confidence,
                                      status))
    sidecar.save()


def _as_label(field_name: str, value: Any) -> Optional[str]:
    if value is None:
        return None
    return str(round(float(value))) if field_name == "bpm" else str(value)


def _typed(field_name: str, text: str) -> Any:
    """The value as preprocessing reads it back: a whole BPM, the signature's numerator."""
    if field_name == "bpm":
        return int(text)
    return text.split("/")[0] if field_name == "timesignature" else text


def _read_report(path: Path) -> Dict[str, dict]:
    if not path.is_file():
        return {}
    data = read_json(path)
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("songs"), dict):
        return {}  # another version's measurements: measured again
    return data["songs"]


def _write_report(path: Path, entries: Dict[str, dict]) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({"version": VERSION, "songs": entries}, indent=1, sort_keys=True) + "\n")


def _seconds(path: Path) -> float:
    try:
        return audio_seconds(path)
    except DataError:
        return 0.0  # unreadable: the analysis says why


def _reason(err: Exception, path: Path) -> str:
    message, prefix = str(err), f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message
