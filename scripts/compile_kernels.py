"""Compile librosa's numba kernels into their on-disk cache, once, at set-up (`scripts/setup.sh` runs this).

The song analysis (tempo, key, metre) runs librosa's beat tracker and chroma, which numba compiles on first use and
caches beside librosa: about 30 s on 2 cores, otherwise paid by the first `sidestep.analyze` or preprocessing run
(and the first test of it). This analyses 8 s of generated music (a chord and a click on every beat, so every
measurement runs) and prints how long it took."""

import time

import numpy as np

from sidestep.analysis.song import analyse_audio


def music(rate: int = 44_100, seconds: float = 8.0, bpm: float = 120.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0)) / 6  # C major
    click = np.where((t % (60 / bpm)) < 0.02, np.sin(2 * np.pi * 1000 * t), 0.0)
    return np.stack([chord + click] * 2, axis=1).astype(np.float32)


if __name__ == "__main__":
    start = time.perf_counter()
    found = analyse_audio(music(), 44_100)
    print(f"librosa's kernels ready (compiled, or read from their cache) in {time.perf_counter() - start:.1f} s "
          f"(the test song: {found.tempo.value} bpm, {found.key.value})")
