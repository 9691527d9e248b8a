"""Reading label files: `song.txt` (`key: value` lines, a multi-line `lyrics:` block last), `song.json`,
ACE-Step's `song.caption.txt` / `song.lyrics.txt`, and the typed values in them."""

import json
import re
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from sidestep.errors import DataError

# Sidecar key (lower case) -> the field it sets; aliases are the spellings Side-Step v1.1 and ACE-Step accept.
_FIELDS = {
    "caption": "caption", "tags": "caption", "genre": "genre", "lyrics": "lyrics",
    "bpm": "bpm", "tempo": "bpm",
    "key": "keyscale", "keyscale": "keyscale", "scale": "keyscale",
    "signature": "timesignature", "timesignature": "timesignature", "time_signature": "timesignature",
    "sig": "timesignature",
    "language": "language", "lang": "language", "vocal_language": "language",
    "instrumental": "instrumental", "is_instrumental": "instrumental",
}
# Keys Side-Step v1.1 and ACE-Step's builder write that a label has no use for: trigger words and repeats are
# preprocessing options now, the duration is measured from the audio, the rest is their bookkeeping.
_IGNORED = frozenset({"custom_tag", "trigger", "tag_position", "repeat", "repeats", "prompt_override", "duration",
                      "id", "audio_path", "filename", "raw_lyrics", "formatted_lyrics", "labeled", "caption_source"})
_KNOWN = frozenset(_FIELDS) | _IGNORED
_KEY_LINE = re.compile(r"^\s*([A-Za-z][A-Za-z_ ]*?)\s*:")
_BPM = re.compile(r"^(\d+(?:\.\d+)?)\s*(?:bpm)?$", re.IGNORECASE)
_SIGNATURE = re.compile(r"^(\d{1,2})(?:\s*/\s*(\d{1,2}))?$")
_LANGUAGE = re.compile(r"^(?:[a-z]{2,3}|unknown)$")
_NOT_GIVEN = ("", "n/a", "na", "none", "unknown", "null")
_TRUE, _FALSE = ("true", "yes", "1", "y"), ("false", "no", "0", "n")


def spellings(field: str) -> Tuple[str, ...]:
    """Every sidecar key that sets `field` ('bpm' -> 'bpm', 'tempo'), so an edit finds the one a file uses."""
    return tuple(key for key, name in _FIELDS.items() if name == field)


class LabelError(DataError):
    """A label file (sidecar or dataset.json) is unreadable or holds a bad value; the message names both."""


def read_sidecars(audio_path: Path) -> Dict[str, Any]:
    """Typed fields from the sidecars beside `audio_path` (empty when it has none)."""
    txt, js = audio_path.with_suffix(".txt"), audio_path.with_suffix(".json")
    if txt.is_file() and js.is_file():
        raise LabelError(f"{txt} and {js} both label {audio_path.name}; keep one")
    fields: Dict[str, Any] = {}
    if js.is_file():
        raw = read_json(js)
        if not isinstance(raw, dict):
            raise LabelError(f"{js}: expected an object of fields, found a {type(raw).__name__}")
        fields = parse_fields(raw, str(js), strict=True)
    elif txt.is_file():
        fields = parse_fields(_parse_txt(txt), str(txt), strict=True)
    stem = str(audio_path.with_suffix(""))
    for field in ("caption", "lyrics"):
        extra = Path(f"{stem}.{field}.txt")
        if field not in fields and extra.is_file():
            fields.update(parse_fields({field: read_text(extra)}, str(extra), strict=True))
    return fields


def _parse_txt(path: Path) -> Dict[str, str]:
    """`key: value` lines; after `lyrics:` every line is lyrics. Repeats and unknown keys are errors."""
    text = read_text(path)
    lines = text.splitlines()
    if not is_key_line(next((line for line in lines if line.strip()), "")):
        return {"lyrics": text}
    raw: Dict[str, str] = {}
    key = None
    for number, line in enumerate(lines, 1):
        new_key = key_of(line) if key != "lyrics" else None
        if new_key is None:
            if key is not None:
                raw[key] += "\n" + line
            continue
        if new_key not in _KNOWN:
            raise LabelError(f"{path}, line {number}: unknown key {new_key!r} (known: {', '.join(_FIELDS)})")
        if new_key in raw:
            raise LabelError(f"{path}, line {number}: {new_key!r} appears twice")
        key, raw[new_key] = new_key, line.split(":", 1)[1]
    return raw


def is_key_line(line: str) -> bool:
    """Whether a line sets a key a sidecar may hold (else a `song.txt` starting with it is plain lyrics)."""
    return key_of(line) in _KNOWN


def key_of(line: str) -> Optional[str]:
    """'Time Signature: 4/4' -> 'time_signature'; None for a line that is no `key: value`."""
    match = _KEY_LINE.match(line)
    return match.group(1).strip().lower().replace(" ", "_") if match else None


def parse_fields(raw: Dict[str, Any], where: str, strict: bool) -> Dict[str, Any]:
    """Typed fields from raw `key: value`s; empty or 'N/A' values count as not given."""
    fields: Dict[str, Any] = {}
    given_by: Dict[str, str] = {}
    for key, value in raw.items():
        name = _FIELDS.get(str(key).lower())
        if name is None:
            if strict and str(key).lower() not in _IGNORED:
                raise LabelError(f"{where}: unknown key {key!r} (known: {', '.join(_FIELDS)})")
            continue
        if value is None or (isinstance(value, str) and value.strip().lower() in _NOT_GIVEN and name != "lyrics"):
            continue
        if name in given_by:
            raise LabelError(f"{where}: {given_by[name]!r} and {key!r} both set the {name}; keep one")
        given_by[name] = key
        parsed = _parse_value(name, value, where, key)
        if parsed is not None:
            fields[name] = parsed
    return fields


def _parse_value(name: str, value: Union[str, int, float, bool], where: str, key: str) -> Any:
    def bad(expected: str) -> LabelError:
        return LabelError(f"{where}: {key}: {text!r} is not {expected}")

    text = value.strip() if isinstance(value, str) else value
    if name == "instrumental":
        if isinstance(text, bool):
            return text
        if str(text).lower() in _TRUE + _FALSE:
            return str(text).lower() in _TRUE
        raise bad("true or false")
    if isinstance(text, bool):
        raise bad("text or a number")
    if name == "bpm":
        match = _BPM.match(str(text))
        if match is None or float(match.group(1)) <= 0:
            raise bad("a number")
        return round(float(match.group(1)))
    if name == "timesignature":
        match = _SIGNATURE.match(str(text))
        if match is None or int(match.group(1)) == 0:
            raise bad("a time signature such as 4/4 or 3")
        return match.group(1).lstrip("0")
    if not isinstance(text, str):
        raise bad("text")
    if name == "language":
        if not _LANGUAGE.match(text.lower()):
            raise bad("a language code such as en, zh or unknown")
        return text.lower()
    return text or None


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: Windows editors start files with a BOM
    except UnicodeDecodeError:
        raise LabelError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    except OSError as err:
        raise LabelError(f"{path}: unreadable ({err.strerror})") from None


def read_json(path: Path) -> Any:
    """The parsed JSON, or LabelError naming the file and the line of the mistake."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise LabelError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except RecursionError:
        raise LabelError(f"{path}: nested too deeply to be labels") from None
