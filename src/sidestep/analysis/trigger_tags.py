"""Trigger tags in the captions of a folder's sidecars: add, remove, rename, count.

A caption is comma-separated tags, as ACE-Step joins a trigger word to it (`labels.with_trigger`). The edit starts
from the caption preprocessing would give the song (its sidecar's, ACE-Step's `song.caption.txt`, its genre,
else its file name) and writes the result into the sidecar, so adding a tag never loses the caption.
"""

from collections import Counter
from pathlib import Path
from typing import List, Optional, Tuple

from sidestep.analysis.sidecar_edit import Sidecar
from sidestep.data.audio_files import find_audio
from sidestep.errors import DataError
from sidestep.preprocessing.labels import caption_from_filename
from sidestep.preprocessing.sidecars import read_sidecars

OPERATIONS = ("add", "remove", "replace", "list")
POSITIONS = ("prepend", "append")


def split(caption: Optional[str]) -> List[str]:
    return [part.strip() for part in (caption or "").split(",") if part.strip()]


def edited(tags: List[str], operation: str, tag: str, new: Optional[str], position: str) -> List[str]:
    """The tags after one operation; the same list when it changes nothing."""
    if operation == "add":
        if tag in tags:
            return tags
        return [tag, *tags] if position == "prepend" else [*tags, tag]
    if operation == "remove":
        return [part for part in tags if part != tag]
    if operation == "replace":
        renamed = [new if part == tag else part for part in tags]
        return list(dict.fromkeys(renamed))  # a song that had both keeps one
    raise ValueError(f"unknown operation {operation!r}")


def edit_folder(folder: Path, operation: str, tag: str, new: Optional[str] = None, position: str = "prepend"
                ) -> Tuple[List[Sidecar], List[Tuple[Path, str]]]:
    """(the sidecars the edit changes, not yet saved; songs whose sidecar could not be read, with the reason)."""
    changed, failed = [], []
    for path in find_audio(Path(folder))[0]:
        try:
            sidecar = Sidecar.open(path)
            tags = split(_caption(path))
            after = edited(tags, operation, tag, new, position)
            if after != tags:
                sidecar.set("caption", ", ".join(after))
                changed.append(sidecar)
        except DataError as err:
            failed.append((path, str(err)))
    return changed, failed


def count_tags(folder: Path) -> Tuple[Counter, int, List[Tuple[Path, str]]]:
    """(how many songs carry each caption tag, the number of songs, unreadable sidecars)."""
    counts: Counter = Counter()
    failed, songs = [], find_audio(Path(folder))[0]
    for path in songs:
        try:
            counts.update(set(split(_caption(path))))
        except DataError as err:
            failed.append((path, str(err)))
    return counts, len(songs), failed


def _caption(path: Path) -> str:
    """The caption preprocessing gives the song from its sidecars (ACE-Step's `song.caption.txt` included)."""
    fields = read_sidecars(path)
    return fields.get("caption") or fields.get("genre") or caption_from_filename(path)
