"""The songs of an audio folder with their labels, and what each one's finished tensors must record to count as
up to date (its content hash and a digest of every setting that changes the output)."""

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from omegaconf import DictConfig

from sidestep.config.choices import Normalize
from sidestep.data.audio import find_audio
from sidestep.digest import file_hash
from sidestep.errors import DataError
from sidestep.preprocessing.labels import Label, labels_for, read_dataset_json, with_trigger

FORMAT_VERSION = 1  # bump when the tensors a song turns into change for the same inputs


@dataclass(frozen=True)
class Song:
    path: Path
    name: str  # output file stem, unique in the folder: the relative path with separators made safe
    label: Label
    source_hash: str  # sha256 of the audio file
    settings_hash: str  # digest of the label and every setting that shapes the tensors


@dataclass(frozen=True)
class Failure:
    path: Path
    reason: str


def find_songs(settings: DictConfig, model_identity: str) -> Tuple[List[Song], List[Failure]]:
    """Every decodable song under `audio_dir` with its label; files that cannot be used, with the reason."""
    audio_dir = Path(settings.audio_dir)
    files, unsupported = find_audio(audio_dir)
    failures = [Failure(p, f"{p.suffix} files cannot be decoded (copy-protected); convert it to WAV or FLAC")
                for p in unsupported]
    dataset: Optional[Dict[Path, Label]] = None
    if settings.dataset_json:
        dataset = read_dataset_json(Path(settings.dataset_json), audio_dir)
    shared = _shared_settings(settings, model_identity)
    songs = []
    for path in files:
        try:
            label = with_trigger(labels_for(path, dataset), settings.trigger_tag, settings.trigger_position)
            digest = hashlib.sha256(json.dumps({**shared, "label": label.metadata()}, sort_keys=True).encode())
            songs.append(Song(path, output_name(path, audio_dir), label, file_hash(path), digest.hexdigest()[:16]))
        except DataError as err:
            failures.append(Failure(path, reason_of(err, path)))
        except OSError as err:
            failures.append(Failure(path, f"unreadable ({err.strerror or err})"))
    return songs, failures


def output_name(path: Path, audio_dir: Path) -> str:
    """`songs/live/take 1.wav` -> `live__take_1`: unique per song, safe on every file system."""
    stem = "__".join(path.relative_to(audio_dir).with_suffix("").parts)
    return re.sub(r"[^\w.\-]+", "_", stem)


def _shared_settings(settings: DictConfig, model_identity: str) -> dict:
    keys = ("max_duration", "tile_seconds", "tile_overlap_seconds", "max_text_tokens", "max_lyric_tokens")
    return {"format": FORMAT_VERSION, "model": model_identity, **{k: settings[k] for k in keys},
            **_loudness_settings(settings)}


def _loudness_settings(settings: DictConfig) -> dict:
    """What normalising adds to a song's settings: nothing for `none`, so songs done before it existed stay up to
    date; the targets the mode uses otherwise."""
    mode = settings.normalize
    if mode == Normalize.none:
        return {}
    keys = ("target_peak_db",) if mode == Normalize.peak else ("target_lufs", "target_peak_db")
    return {"normalize": str(mode), **{k: settings[k] for k in keys}}


def reason_of(err: Exception, path: Path) -> str:
    """The error's message without the leading path (the report shows the file in its own column)."""
    message = str(err)
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message
