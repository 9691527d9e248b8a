"""Decoding what libsndfile cannot (M4A/AAC/ALAC, WMA, Opus in MP4/WebM, APE, WavPack, ...) with PyAV, whose
wheels bundle FFmpeg's libraries: musicians' iTunes and phone recordings work with no system install."""

from pathlib import Path
from typing import Optional, Tuple

import av
import numpy as np

from sidestep.errors import DataError, first_line


def ffmpeg_header(path: Path) -> Tuple[int, float]:
    """(sample rate, seconds) of the first audio stream, from the container without decoding."""
    with _open(path) as container:
        stream = _audio_stream(container, path)
        if container.duration is not None:
            seconds = container.duration / av.time_base
        else:
            seconds = float((stream.duration or 0) * stream.time_base)
        return stream.rate, seconds


def ffmpeg_decode(path: Path, frames: Optional[int] = None) -> Tuple[np.ndarray, int]:
    """float32 [samples, channels] at the file's own rate, stopping once `frames` samples are decoded."""
    chunks, decoded = [], 0
    with _open(path) as container:
        stream = _audio_stream(container, path)
        planar = av.AudioResampler(format="fltp")  # any sample format -> float32, one row per channel
        try:
            for frame in container.decode(stream):
                for converted in planar.resample(frame):
                    chunks.append(converted.to_ndarray())
                    decoded += chunks[-1].shape[1]
                if frames is not None and decoded >= frames:
                    break
        except av.FFmpegError as err:
            raise DataError(f"{path}: unreadable or corrupt audio ({first_line(err)})") from None
        rate = stream.rate
    if not chunks:
        return np.zeros((0, 1), dtype=np.float32), rate
    data = np.concatenate(chunks, axis=1).T
    return (data if frames is None else data[:frames]), rate


def _open(path: Path):
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as err:
        raise DataError(f"{path}: unreadable or corrupt audio ({first_line(err)})") from None


def _audio_stream(container, path: Path):
    if not container.streams.audio:
        container.close()
        raise DataError(f"{path}: holds no audio stream")
    return container.streams.audio[0]
