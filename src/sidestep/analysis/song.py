"""Everything measured in one song: decode once, then tempo, key, metre, duration and loudness."""

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import librosa
import numpy as np
import soxr

from sidestep.analysis.estimate import Estimate
from sidestep.analysis.key import chroma_of, estimate_key
from sidestep.analysis.metre import beat_features, estimate_metre
from sidestep.analysis.tempo import estimate_tempo
from sidestep.data.audio_files import decode
from sidestep.preprocessing.loudness import loudness

RATE = 22_050  # librosa's default: its beat tracker and chroma are tuned for it
HOP = 512
LOW_BANDS = 12  # mel bands below about 300 Hz: kick drum and bass


@dataclass(frozen=True)
class SongAnalysis:
    tempo: Estimate
    key: Estimate
    metre: Estimate
    duration: float  # seconds
    lufs: Optional[float]  # None when nothing passes BS.1770's gates (under 0.4 s, or below -70 LUFS)
    peak_db: float

    def as_json(self) -> dict:
        return {"bpm": self.tempo.as_json(), "key": self.key.as_json(), "signature": self.metre.as_json(),
                "duration": round(self.duration, 3), "lufs": self.lufs, "peak_db": self.peak_db}


def analyse_file(path: Path) -> SongAnalysis:
    """Measure one song, the whole of it."""
    return analyse_audio(*decode(path))


def analyse_audio(data: np.ndarray, rate: int) -> SongAnalysis:
    """`data`: [samples, channels] at `rate`."""
    lufs, peak = loudness(data, rate)
    mono = soxr.resample(np.ascontiguousarray(data.mean(axis=1)), rate, RATE)
    mel = librosa.power_to_db(librosa.feature.melspectrogram(y=mono, sr=RATE, hop_length=HOP))
    onsets = librosa.onset.onset_strength(S=mel, sr=RATE, hop_length=HOP)
    low_onsets = librosa.onset.onset_strength(S=mel[:LOW_BANDS], sr=RATE, hop_length=HOP)
    tempo, beats = estimate_tempo(onsets, RATE, HOP)
    chroma = chroma_of(mono, RATE, HOP)
    metre = estimate_metre(beat_features(onsets, low_onsets, chroma, beats)) if tempo.value else Estimate.nothing()
    return SongAnalysis(tempo, estimate_key(chroma), metre, data.shape[0] / rate,
                        lufs if np.isfinite(lufs) else None, peak)
