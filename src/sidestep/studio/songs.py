"""A song folder as a table: each song's labels as preprocessing reads them (`preprocessing/sidecars.py`), edited
and saved the way `analysis/sidecar_edit.py` writes them, leaving the rest of each file as the user wrote it."""

from pathlib import Path
from typing import Dict, List

from sidestep.analysis.sidecar_edit import Sidecar
from sidestep.data.audio_files import find_audio
from sidestep.errors import DataError, SidestepError
from sidestep.preprocessing.labels import caption_from_filename
from sidestep.preprocessing.sidecars import key_of, read_sidecars

COLUMNS = ("caption", "lyrics", "bpm", "keyscale", "timesignature", "language")


def song_table(folder: Path) -> List[dict]:
    """One row per song: its file, its sidecar, its labels (or why its sidecar cannot be read)."""
    rows = []
    for path in find_audio(folder)[0]:
        row = {"song": str(path.relative_to(folder)), "sidecar": None, "error": None,
               "fields": dict.fromkeys(COLUMNS, "")}
        try:
            sidecar = Sidecar.open(path)
            labels = read_sidecars(path)
            row["sidecar"] = sidecar.path.name if sidecar.path.is_file() else None
            row["fields"].update({k: "" if labels.get(k) is None else str(labels[k]) for k in COLUMNS})
        except DataError as err:
            row["error"] = str(err)
        row["caption_default"] = caption_from_filename(path)
        rows.append(row)
    return rows


def save_song(folder: Path, song: str, fields: Dict[str, str]) -> str:
    """Write the changed labels of one song; the song's sidecar diff (empty when nothing changed)."""
    path = (folder / song).resolve()
    if folder.resolve() not in path.parents or path not in find_audio(folder)[0]:
        raise SidestepError(f"{song}: no such song in {folder}")
    sidecar = Sidecar.open(path)
    for name, text in fields.items():
        if name not in COLUMNS:
            raise SidestepError(f"{name}: not a label (one of {', '.join(COLUMNS)})")
        if str(text) != ("" if sidecar.value(name) is None else str(sidecar.value(name))):
            _set(sidecar, name, str(text))
    for name in fields:
        sidecar.value(name)  # a value preprocessing would refuse is refused before anything is written
    diff = sidecar.diff()
    sidecar.save()
    return diff


def _set(sidecar: Sidecar, name: str, text: str) -> None:
    """`Sidecar.set`, except the lyrics of a `song.txt`: its `lyrics:` block is the file's last, replaced whole."""
    if name != "lyrics" or sidecar.json_fields is not None:
        sidecar.set(name, text)
        return
    at = next((i for i, line in enumerate(sidecar.lines) if key_of(line) == "lyrics"), len(sidecar.lines))
    sidecar.lines[at:] = ["lyrics:", *text.splitlines()]
    sidecar.changed = True
