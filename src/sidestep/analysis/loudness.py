"""Integrated loudness (ITU-R BS.1770 / EBU R128, by pyloudnorm) and sample peak, of the whole file."""

from typing import Tuple

import numpy as np
import pyloudnorm

MIN_SECONDS = 0.4  # BS.1770 gates 400 ms blocks: a shorter file has no integrated loudness


def loudness(audio: np.ndarray, rate: int) -> Tuple[float, float]:
    """(integrated loudness in LUFS, sample peak in dBFS) of float audio [samples, channels]."""
    peak = 20 * np.log10(max(float(np.abs(audio).max()), 1e-12))
    if audio.shape[0] < MIN_SECONDS * rate:
        return float("nan"), round(peak, 2)
    lufs = pyloudnorm.Meter(rate).integrated_loudness(audio)
    return round(float(lufs), 2), round(peak, 2)
