"""Audio in and out: decode a song to the model's 48 kHz stereo, write WAVs, fingerprint files.

Decoding is soundfile (libsndfile; its wheels bundle MP3 support). Resampling is soxr, not torchaudio:
torchaudio's PyPI wheels are tied to one torch release and built for CUDA, so using it would pin the whole
project to that torch's CUDA builds; soxr is a small, well-kept resampler that works beside any torch.
"""

import io
import math
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import soundfile
import soxr
import torch

from sidestep.atomic import atomic_file
from sidestep.data.ffmpeg_audio import ffmpeg_decode, ffmpeg_header
from sidestep.errors import DataError, first_line, plain

SAMPLE_RATE = 48_000
# What libsndfile decodes (each checked by decoding a file soundfile wrote; .opus = Ogg Opus).
SOUNDFILE_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aif", ".aiff", ".caf")
# What users keep that libsndfile cannot decode: FFmpeg does, through PyAV (see ffmpeg_audio).
FFMPEG_SUFFIXES = (".m4a", ".m4b", ".mp4", ".aac", ".alac", ".wma", ".ape", ".wv", ".ac3", ".amr", ".mka",
                   ".webm", ".mp2", ".dsf")
SUPPORTED_SUFFIXES = SOUNDFILE_SUFFIXES + FFMPEG_SUFFIXES
# Audio no decoder may open (iTunes' copy-protected purchases): reported, so nothing is skipped silently.
UNSUPPORTED_SUFFIXES = (".m4p",)
SIDECAR_SUFFIXES = (".txt", ".json")
SILENCE_PEAK = 1e-4  # -80 dBFS: below this a file is digital silence, nothing to learn from
RESAMPLE_QUALITY = "VHQ"
_RESAMPLE_MARGIN_S = 0.1  # decoded past a cut so the resampler's end-of-input edge falls outside the kept part


class AudioError(DataError):
    """An audio file cannot be used; the message names the file and the reason."""


def find_audio(folder: Path) -> Tuple[List[Path], List[Path]]:
    """(files we decode, audio files we cannot decode), each sorted; hidden files/folders and sidecars skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    supported: List[Path] = []
    unsupported: List[Path] = []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        suffix = path.suffix.lower()
        if any(part.startswith(".") for part in parts) or suffix in SIDECAR_SUFFIXES or not path.is_file():
            continue
        if suffix in SUPPORTED_SUFFIXES:
            supported.append(path)
        elif suffix in UNSUPPORTED_SUFFIXES:
            unsupported.append(path)
    return supported, unsupported


def audio_seconds(path: Path) -> float:
    """Length in seconds from the file header, without decoding."""
    return _header(Path(path))[1]


def load_audio(path: Path, max_seconds: Optional[float] = None) -> torch.Tensor:
    """float32 [2, S] at 48 kHz: mono duplicated, beyond two channels the first two, cut to `max_seconds`.

    Only the frames needed for `max_seconds` are decoded, so a two-hour file costs what its first minutes do.
    """
    path = Path(path)
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    rate = _header(path)[0]
    frames = -1 if max_seconds is None else math.ceil((max_seconds + _RESAMPLE_MARGIN_S) * rate)
    if path.suffix.lower() in FFMPEG_SUFFIXES:
        data, rate = _ffmpeg(ffmpeg_decode, path, None if frames == -1 else frames)
    else:
        try:
            data, rate = soundfile.read(path, frames=frames, dtype="float32", always_2d=True)
        except (soundfile.SoundFileError, RuntimeError) as err:
            raise AudioError(f"{path}: unreadable or corrupt audio ({_first_line(err)})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: zero length, the file holds no audio")
    data = data[:, :2]
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or Inf samples; re-export it")
    if np.abs(data).max() < SILENCE_PEAK:
        raise AudioError(f"{path}: silent (peak below -80 dBFS), nothing to learn from")
    if rate != SAMPLE_RATE:
        data = soxr.resample(np.ascontiguousarray(data), rate, SAMPLE_RATE, quality=RESAMPLE_QUALITY)
    audio = torch.from_numpy(np.ascontiguousarray(data.T, dtype=np.float32))
    if audio.shape[0] == 1:
        audio = audio.expand(2, -1).clone()
    if max_seconds is not None:
        audio = audio[:, : int(max_seconds * SAMPLE_RATE)].contiguous()
    return audio


def write_wav(path: Path, audio: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> None:
    """16-bit PCM WAV of `audio` [channels, samples], clipped to [-1, 1], written whole or not at all."""
    if audio.ndim != 2:
        raise ValueError(f"audio must be [channels, samples], got shape {list(audio.shape)}")
    data = audio.detach().float().clamp(-1.0, 1.0).cpu().numpy().T
    encoded = io.BytesIO()  # encoded in memory: libsndfile would report a full disk as a short write, not an errno
    soundfile.write(encoded, data, sample_rate, subtype="PCM_16", format="WAV")
    with atomic_file(Path(path)) as tmp:
        tmp.write_bytes(encoded.getvalue())


def _header(path: Path) -> Tuple[int, float]:
    """(sample rate, seconds) from the header; AudioError for formats we skip and files libsndfile rejects."""
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise AudioError(f"{path}: {path.suffix or 'extension-less'} files cannot be decoded here (copy-protected, "
                         "or not audio); convert it to WAV or FLAC")
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: zero length, the file is empty")
    if path.suffix.lower() in FFMPEG_SUFFIXES:
        return _ffmpeg(ffmpeg_header, path)
    try:
        info = soundfile.info(path)
    except (soundfile.SoundFileError, RuntimeError) as err:
        raise AudioError(f"{path}: unreadable or corrupt audio ({_first_line(err)})") from None
    return info.samplerate, info.duration


def _ffmpeg(read, path: Path, *args):
    """PyAV's reader, its problems as `AudioError` like libsndfile's."""
    try:
        return read(path, *args)
    except DataError as err:
        raise AudioError(str(err)) from None


def _first_line(err: Exception) -> str:
    """libsndfile's own reason ("Format not recognised."), without soundfile's repeat of the path."""
    reason = getattr(err, "error_string", None)
    return plain(reason).splitlines()[0] if reason else first_line(err)
