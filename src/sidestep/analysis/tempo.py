"""Tempo from librosa's beat tracker, refined by a straight line through the beat times.

The tracker's own tempo is an autocorrelation lag in whole frames (about 2 % apart at 120 BPM); the slope of the
beat times against their count is finer. Confidence is how steady the pulse is: the share of the song whose local
tempo (librosa's tempogram, frame by frame) agrees with the global one within 4 %, or sits at twice or half it.
"""

from typing import Tuple

import librosa
import numpy as np

from sidestep.analysis.estimate import Estimate

AGREE = 0.04
MIN_BEATS = 8


def estimate_tempo(onsets: np.ndarray, rate: int, hop: int) -> Tuple[Estimate, np.ndarray]:
    """(the tempo in BPM, the beat frames) from an onset-strength envelope."""
    _, beats = librosa.beat.beat_track(onset_envelope=onsets, sr=rate, hop_length=hop)
    if len(beats) < MIN_BEATS:
        return Estimate.nothing(), beats
    times = librosa.frames_to_time(beats, sr=rate, hop_length=hop)
    slope = np.polyfit(np.arange(len(times)), times, 1)[0]
    bpm = 60.0 / slope
    local = librosa.feature.tempo(onset_envelope=onsets, sr=rate, hop_length=hop, aggregate=None)
    ratio = local / bpm
    steady = np.mean([np.abs(ratio / level - 1) <= AGREE for level in (1.0, 2.0, 0.5)], axis=0).sum(axis=0) > 0
    return Estimate(round(float(bpm), 1), float(np.mean(steady))), beats
