"""Per-song labels (caption, lyrics, musical metas), from wherever users already keep them.

For one song the first source that has it wins:
1. ACE-Step's `dataset.json` (its dataset builder's format, see `read_dataset_json`).
2. Sidecars beside `song.wav`: `song.json`, or `song.txt` with `key: value` lines and a multi-line `lyrics:`
   block last (a `song.txt` whose first line is no known key is plain lyrics, as ACE-Step reads it); then
   ACE-Step's `song.caption.txt` / `song.lyrics.txt` for what those left out.
3. The file name: `my_song-01.wav` gets the caption "my song 01" (underscores and dashes become spaces).
"""

import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, Optional

from sidestep.errors import ConfigError
from sidestep.preprocessing.sidecars import LabelError, parse_fields, read_json, read_sidecars

INSTRUMENTAL = "[Instrumental]"
UNKNOWN_LANGUAGE = "unknown"  # ACE-Step's code for a language it does not know
TRIGGER_POSITIONS = ("prepend", "append", "replace")


@dataclass(frozen=True)
class Label:
    """What the text and lyric encoders are told about one song."""

    caption: str
    lyrics: str
    bpm: Optional[int] = None
    keyscale: Optional[str] = None
    timesignature: Optional[str] = None  # the numerator, as ACE-Step writes it: "4" for 4/4, "6" for 6/8
    language: str = UNKNOWN_LANGUAGE
    is_instrumental: bool = True

    def metadata(self) -> Dict[str, Any]:
        """The fields as a JSON-ready dict, named as in ACE-Step's sample metadata."""
        return asdict(self)


def labels_for(audio_path: Path, dataset: Optional[Dict[Path, Label]] = None) -> Label:
    """The song's label: its dataset.json entry, else its sidecars, else its file name."""
    audio_path = Path(audio_path)
    if dataset and audio_path.resolve() in dataset:
        return dataset[audio_path.resolve()]
    return _build(read_sidecars(audio_path), audio_path)


def caption_from_filename(audio_path: Path) -> str:
    """'my_song-01.wav' -> 'my song 01'."""
    return " ".join(re.sub(r"[_\-]+", " ", Path(audio_path).stem).split()) or Path(audio_path).stem


def with_trigger(label: Label, tag: Optional[str], position: str = "prepend") -> Label:
    """The label with a trigger tag added to its caption, joined by ", " as ACE-Step does.

    A caption that already carries the tag is left as is, so a tag that dataset.json applied is not doubled.
    """
    if position not in TRIGGER_POSITIONS:
        raise ConfigError(f"trigger position {position!r}: use one of {', '.join(TRIGGER_POSITIONS)}")
    tag = str(tag).strip() if tag is not None else ""
    if not tag or (position != "replace" and tag in (part.strip() for part in label.caption.split(","))):
        return label
    if position == "replace" or not label.caption:
        return replace(label, caption=tag)
    caption = f"{tag}, {label.caption}" if position == "prepend" else f"{label.caption}, {tag}"
    return replace(label, caption=caption)


def read_dataset_json(path: Path, audio_dir: Path) -> Dict[Path, Label]:
    """Labels from an ACE-Step 1.5 dataset-builder `dataset.json`, keyed by the resolved audio path.

    Format: {"metadata": {"custom_tag", "tag_position", ...}, "samples": [{"audio_path", "filename", "caption",
    "genre", "lyrics", "bpm", "keyscale", "timesignature", "language", "is_instrumental", "custom_tag", ...}]}.
    The entry's custom tag (else the dataset's) is applied as ACE-Step's preprocessing applies it. ACE-Step
    encodes the `lyrics` field whatever `is_instrumental` says, so here too the lyrics decide.
    """
    path, audio_dir = Path(path), Path(audio_dir)
    data = read_json(path)
    samples = data.get("samples") if isinstance(data, dict) else None
    if not isinstance(samples, list):
        raise LabelError(f'{path}: no "samples" list; is this an ACE-Step dataset.json?')
    meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    position = meta.get("tag_position") or "prepend"
    if position not in TRIGGER_POSITIONS:
        raise LabelError(f"{path}: metadata.tag_position {position!r}: use one of {', '.join(TRIGGER_POSITIONS)}")
    labels: Dict[Path, Label] = {}
    for index, entry in enumerate(samples):
        if not isinstance(entry, dict):
            raise LabelError(f"{path}: samples[{index}] is a {type(entry).__name__}, expected an object")
        where = f"{path}: samples[{index}] ({entry.get('filename') or entry.get('audio_path') or entry.get('id')})"
        audio = _find_entry_audio(entry, audio_dir, path.parent, where)
        if audio in labels:
            raise LabelError(f"{where}: a second entry for {audio}")
        fields = parse_fields(entry, where, strict=False)
        fields.pop("instrumental", None)
        tag = entry["custom_tag"] if "custom_tag" in entry else meta.get("custom_tag")
        labels[audio] = with_trigger(_build(fields, audio), tag, position)
    return labels


def _find_entry_audio(entry: Dict[str, Any], audio_dir: Path, json_dir: Path, where: str) -> Path:
    """ACE-Step writes absolute paths; relative ones are tried against the audio folder and dataset.json's."""
    given, filename = entry.get("audio_path"), entry.get("filename")
    candidates = []
    if isinstance(given, str) and given.strip():
        given_path = Path(given)
        candidates += [given_path] if given_path.is_absolute() else [audio_dir / given_path, json_dir / given_path]
    if isinstance(filename, str) and filename.strip():
        candidates.append(audio_dir / filename)
    if not candidates:
        raise LabelError(f"{where}: has neither audio_path nor filename")
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise LabelError(f"{where}: audio not found (looked for {', '.join(str(c) for c in candidates)})")


def _build(fields: Dict[str, Any], audio_path: Path) -> Label:
    lyrics = fields.get("lyrics")
    instrumental = fields.get("instrumental")
    if instrumental is None:
        instrumental = lyrics is None or lyrics.lower() == INSTRUMENTAL.lower()
    return Label(
        caption=fields.get("caption") or fields.get("genre") or caption_from_filename(audio_path),
        lyrics=INSTRUMENTAL if instrumental or not lyrics else lyrics,
        bpm=fields.get("bpm"),
        keyscale=fields.get("keyscale"),
        timesignature=fields.get("timesignature"),
        language=fields.get("language", UNKNOWN_LANGUAGE),
        is_instrumental=instrumental,
    )
