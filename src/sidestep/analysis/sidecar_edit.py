"""Changing fields of a song's sidecar the way preprocessing reads it (`sidecars.read_sidecars`), leaving the rest
of the file as the user wrote it.

`song.json` gets the field under the key it already uses, else under ACE-Step's name. `song.txt` gets its
`key: value` line replaced in place, or a new line above the `lyrics:` block; a `song.txt` of plain lyrics becomes
`key: value` lines over a `lyrics:` block holding the same text. A song with neither gets a new `song.txt`.
Every write is atomic.
"""

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from sidestep.atomic import atomic_file
from sidestep.preprocessing.sidecars import (
    is_key_line,
    key_of,
    parse_fields,
    read_json,
    read_sidecars,
    read_text,
    spellings,
)


@dataclass
class Sidecar:
    """A song's label file, open for edits: `value` reads a field, `set` changes it, `save` writes it back."""

    path: Path
    json_fields: Optional[Dict[str, Any]] = None  # song.json
    lines: List[str] = field(default_factory=list)  # song.txt
    changed: bool = False
    original: str = ""  # the file's text when opened ("" for a new one)

    @classmethod
    def open(cls, audio_path: Path) -> "Sidecar":
        read_sidecars(audio_path)  # a sidecar preprocessing would refuse is refused here, with its reason
        js, txt = audio_path.with_suffix(".json"), audio_path.with_suffix(".txt")
        if js.is_file():
            return cls(js, json_fields=read_json(js), original=read_text(js))  # an object: read_sidecars checked
        if not txt.is_file():
            return cls(txt)
        original = read_text(txt)
        lines = original.splitlines()
        first = next((line for line in lines if line.strip()), "")
        if lines and not is_key_line(first):
            lines = ["lyrics:", *lines]  # plain lyrics, as ACE-Step writes them
        return cls(txt, lines=lines, original=original)

    def raw(self) -> Dict[str, Any]:
        """The file's `key: value`s as read, before typing."""
        if self.json_fields is not None:
            return dict(self.json_fields)
        raw: Dict[str, Any] = {}
        key = None
        for line in self.lines:
            new_key = key_of(line) if key != "lyrics" else None
            if new_key is None and key is not None:
                raw[key] += "\n" + line
            elif new_key is not None:
                key, raw[new_key] = new_key, line.split(":", 1)[1]
        return raw

    def value(self, name: str) -> Any:
        """The typed value of a field (None when not given), as preprocessing reads it."""
        return parse_fields(self.raw(), str(self.path), strict=True).get(name)

    def set(self, name: str, text: str) -> None:
        """Give field `name` the value `text`, under the key the file already uses for it."""
        present = [key for key in self.raw() if str(key).lower() in spellings(name)]
        key = present[0] if present else name  # a field's own name is ACE-Step's key for it
        self.changed = True
        if self.json_fields is not None:
            self.json_fields[key] = int(text) if name == "bpm" else text
            return
        for index, line in enumerate(self.lines):
            if key_of(line) == "lyrics":
                break
            if key_of(line) == str(key).lower():
                self.lines[index] = f"{line.split(':', 1)[0]}: {text}"
                return
        lyrics_at = next((i for i, line in enumerate(self.lines) if key_of(line) == "lyrics"), len(self.lines))
        self.lines.insert(0 if name == "caption" else lyrics_at, f"{key}: {text}")  # the caption on top

    def text(self) -> str:
        """The file as `save` would write it now."""
        if not self.changed:
            return self.original
        if self.json_fields is not None:
            return json.dumps(self.json_fields, indent=2, ensure_ascii=False) + "\n"
        return "\n".join(self.lines) + "\n"

    def diff(self) -> str:
        """A unified diff from the file as opened to the file as it would be saved ("" when unchanged)."""
        before, after = self.original.splitlines(keepends=True), self.text().splitlines(keepends=True)
        return "".join(difflib.unified_diff(before, after, f"a/{self.path.name}", f"b/{self.path.name}"))

    def save(self) -> None:
        if not self.changed:
            return
        text = self.text()
        with atomic_file(self.path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        self.original, self.changed = text, False

