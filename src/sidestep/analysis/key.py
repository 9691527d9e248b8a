"""Key and mode: the song's mean chroma correlated with the Krumhansl-Kessler key profiles in all 24 keys.

Confidence is the margin between the best and the second-best correlation: a relative minor that fits almost as
well as the major gives a small margin, and the value is flagged rather than written.
"""

import librosa
import numpy as np

from sidestep.analysis.estimate import Estimate

# Krumhansl & Kessler (1982): how well each pitch class fits a key, tonic first.
MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
# How keys are usually spelled: flats where the key signature has them.
MAJOR_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MINOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
MARGIN_SCALE = 0.15  # a margin this large or more is full confidence


def estimate_key(chroma: np.ndarray) -> Estimate:
    """The key from a chroma matrix [12, frames]: 'A minor', 'Eb major'."""
    mean = chroma.mean(axis=1)
    if not np.isfinite(mean).all() or mean.std() == 0:
        return Estimate.nothing()
    scores = []
    for mode, profile, names in (("major", MAJOR, MAJOR_NAMES), ("minor", MINOR, MINOR_NAMES)):
        for tonic in range(12):
            scores.append((np.corrcoef(mean, np.roll(profile, tonic))[0, 1], f"{names[tonic]} {mode}"))
    scores.sort(reverse=True)
    margin = scores[0][0] - scores[1][0]
    return Estimate(scores[0][1], float(min(1.0, margin / MARGIN_SCALE)))


def chroma_of(audio: np.ndarray, rate: int, hop: int) -> np.ndarray:
    return librosa.feature.chroma_cqt(y=audio, sr=rate, hop_length=hop)
