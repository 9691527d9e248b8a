"""Integrated loudness (ITU-R BS.1770 / EBU R128, by pyloudnorm) and sample peak, and the gain that brings a song to
a target before it is encoded (`preprocess.normalize`): quiet masters and brick-walled ones then train alike.

The gain is one number for the whole song (no compression, no limiter: the waveform's shape is the master's). In
`lufs` mode a gain that would lift the sample peak above `target_peak_db` is lowered to land the peak there, so
nothing clips; that song then stays quieter than the target, and its entry says so (`peak_limited`).
"""

import math
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import numpy as np
import pyloudnorm
import torch

from sidestep.config.choices import Normalize

MIN_SECONDS = 0.4  # BS.1770 gates 400 ms blocks: a shorter file has no integrated loudness


def loudness(audio: np.ndarray, rate: int) -> Tuple[float, float]:
    """(integrated loudness in LUFS, sample peak in dBFS) of float audio [samples, channels], to 0.01 dB."""
    lufs, peak = _exact(audio, rate)
    return round(lufs, 2), round(peak, 2)


def _exact(audio: np.ndarray, rate: int) -> Tuple[float, float]:
    peak = 20 * float(np.log10(max(float(np.abs(audio).max()), 1e-12)))
    if audio.shape[0] < MIN_SECONDS * rate:
        return float("nan"), peak
    return float(pyloudnorm.Meter(rate).integrated_loudness(audio)), peak


@dataclass(frozen=True)
class Levels:
    """A song's loudness before and after normalising, for its manifest entry."""

    before_lufs: Optional[float]  # None: too short or silent to measure
    before_peak_db: float
    after_lufs: Optional[float]
    after_peak_db: float
    gain_db: float
    peak_limited: bool  # the LUFS target would have lifted the peak above target_peak_db

    def as_dict(self) -> dict:
        return asdict(self)


def normalize(audio: torch.Tensor, rate: int, mode: Normalize, target_lufs: float,
              target_peak_db: float) -> Tuple[torch.Tensor, Levels]:
    """`audio` [channels, samples] with one gain applied: its loudness at `target_lufs` (`lufs`, peak capped at
    `target_peak_db`) or its sample peak at `target_peak_db` (`peak`). A silent song, or one too short to measure
    in `lufs` mode, keeps its level (gain 0)."""
    before_lufs, before_peak = _measure(audio, rate)
    if before_peak <= -200 or (mode == Normalize.lufs and before_lufs is None):
        gain, limited = 0.0, False
    elif mode == Normalize.peak:
        gain, limited = target_peak_db - before_peak, False
    else:
        gain = target_lufs - before_lufs
        limited = before_peak + gain > target_peak_db
        gain = min(gain, target_peak_db - before_peak)
    scaled = audio * 10 ** (gain / 20)
    after_lufs, after_peak = _measure(scaled, rate)
    return scaled, Levels(_rounded(before_lufs), round(before_peak, 2), _rounded(after_lufs), round(after_peak, 2),
                          round(gain, 2), limited)


def _measure(audio: torch.Tensor, rate: int) -> Tuple[Optional[float], float]:
    """(LUFS or None where BS.1770 gives none: silence, under 0.4 s; sample peak in dBFS), unrounded."""
    lufs, peak = _exact(audio.T.double().numpy(), rate)
    return (lufs if math.isfinite(lufs) else None), peak


def _rounded(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 2)
