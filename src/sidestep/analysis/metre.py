"""Time signature, 3 against 4 beats a bar, from how the accents repeat beat by beat.

Three things mark a bar's first beat in most music: a louder onset, a bass note or kick drum, and a chord change.
Each is taken at every tracked beat and standardised; for each grouping (2, 3, 4 or 6 beats) the best-fitting bar
line (phase) is found and scored by how far its beats stand out. Groupings of 3 and 6 are triple time, 2 and 4
duple (the 6 catches a 3/4 whose eighth notes the tracker followed). Confidence grows with the winner's lead. A
compound 6/8 is heard as 3/4 or 4/4 depending on the beat the tracker follows (see the README's accuracy table).
"""

from typing import Dict, List

import librosa
import numpy as np

from sidestep.analysis.estimate import Estimate

GROUPINGS = {2: "4/4", 3: "3/4", 4: "4/4", 6: "3/4"}
MIN_BEATS = 16  # fewer tracked beats than four bars of 4: no estimate
CONTRAST_SCALE = 0.5  # a lead in standardised contrast this large or more is full confidence


def beat_features(onsets: np.ndarray, low_onsets: np.ndarray, chroma: np.ndarray,
                  beats: np.ndarray) -> List[np.ndarray]:
    """Per beat: onset strength, low-band onset strength, and the chord change into it."""
    window = [np.clip(beats + shift, 0, len(onsets) - 1) for shift in (-1, 0, 1)]
    loud = np.max([onsets[w] for w in window], axis=0)
    low = np.max([low_onsets[w] for w in window], axis=0)
    synced = librosa.util.sync(chroma, beats, aggregate=np.median)[:, 1:len(beats) + 1]
    unit = synced / (np.linalg.norm(synced, axis=0, keepdims=True) + 1e-9)
    change = np.concatenate([[0.0], 1 - np.sum(unit[:, 1:] * unit[:, :-1], axis=0)])
    return [loud, low, change[: len(beats)]]


def contrasts(features: List[np.ndarray]) -> Dict[int, float]:
    """For each bar length: how far its best bar lines' beats stand out, in standard deviations."""
    standard = [(f - f.mean()) / (f.std() + 1e-9) for f in features if f.std() > 0]
    if not standard:
        return {length: 0.0 for length in GROUPINGS}
    total = np.mean(standard, axis=0)
    result = {}
    for length in GROUPINGS:
        positions = np.arange(len(total)) % length
        result[length] = max(total[positions == phase].mean() - total[positions != phase].mean()
                             for phase in range(length))
    return result


def estimate_metre(features: List[np.ndarray]) -> Estimate:
    if len(features[0]) < MIN_BEATS:
        return Estimate.nothing()
    scores = contrasts(features)
    best = {signature: max(s for length, s in scores.items() if GROUPINGS[length] == signature)
            for signature in set(GROUPINGS.values())}
    winner, other = sorted(best, key=best.get, reverse=True)
    return Estimate(winner, float(min(1.0, max(0.0, best[winner] - best[other]) / CONTRAST_SCALE)))
