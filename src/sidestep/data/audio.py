"""Audio in and out: decode a song to the model's 48 kHz stereo, write WAVs, fingerprint files.

Decoding is `audio_files.decode` (libsndfile, else FFmpeg; no torch, so the label analysis shares it). Resampling
is soxr, not torchaudio: torchaudio's PyPI wheels are tied to one torch release and built for CUDA, so using it
would pin the whole project to that torch's CUDA builds; soxr is a small, well-kept resampler beside any torch.
"""

import io
from pathlib import Path
from typing import Optional

import numpy as np
import soundfile
import soxr
import torch

from sidestep.atomic import atomic_file
from sidestep.data.audio_files import AudioError, audio_seconds, decode, find_audio  # noqa: F401 (imported from here)

SAMPLE_RATE = 48_000
RESAMPLE_QUALITY = "VHQ"


def load_audio(path: Path, max_seconds: Optional[float] = None) -> torch.Tensor:
    """float32 [2, S] at 48 kHz: mono duplicated, beyond two channels the first two, cut to `max_seconds`.

    Only the frames needed for `max_seconds` are decoded, so a two-hour file costs what its first minutes do.
    """
    data, rate = decode(path, max_seconds)
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
