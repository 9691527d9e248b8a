"""`preprocess.normalize`: quiet and brick-walled masters are brought to one loudness (ITU-R BS.1770, measured here
with pyloudnorm itself) or one peak before encoding, nothing is lifted into clipping, each song's levels before and
after are in the manifest, and changing the mode redoes the songs."""

import json

import numpy as np
import pyloudnorm
import pytest
import soundfile
import torch

from sidestep.config.choices import Normalize
from sidestep.data.dataset import MANIFEST
from sidestep.errors import ConfigError
from sidestep.preprocessing.loudness import normalize
from sidestep.preprocessing.songs import find_songs
from tests.test_preprocess import header, run, settings

RATE = 48_000


def music(seconds: float = 6.0, seed: int = 0) -> np.ndarray:
    """Stereo [samples, 2]: a few decaying notes with harmonics over soft noise, peak 1."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    wave = 0.05 * rng.standard_normal((len(t), 2))
    for start, freq in zip(np.arange(0, seconds, 0.5), rng.choice([220.0, 277.2, 329.6, 440.0], int(seconds * 2))):
        env = np.where(t >= start, np.exp(-(t - start) * 3), 0.0)
        note = sum(np.sin(2 * np.pi * freq * k * t) / k for k in (1, 2, 3)) * env
        wave += np.stack([note, 0.8 * note], axis=1)
    return wave / np.abs(wave).max()


def quiet() -> np.ndarray:
    return 0.04 * music()  # about -38 LUFS, peak -28 dBFS


def brick_walled() -> np.ndarray:
    return np.clip(1.5 * music(seed=1), -1.0, 1.0)  # 1 % of its samples clipped flat at full scale: about -7 LUFS


def measured(audio) -> float:
    """BS.1770 integrated loudness by pyloudnorm, of [channels, samples] or [samples, channels]."""
    audio = audio.T.double().numpy() if isinstance(audio, torch.Tensor) else audio
    return pyloudnorm.Meter(RATE).integrated_loudness(audio)


def peak_db(audio: torch.Tensor) -> float:
    return 20 * np.log10(audio.abs().max().item())


def as_tensor(wave: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(wave.T, dtype=np.float32))


@pytest.mark.parametrize("make, before", [(quiet, -38), (brick_walled, -7)])
def test_lufs_mode_brings_quiet_and_brick_walled_masters_to_the_target(make, before):
    wave = make()
    assert abs(measured(wave) - before) < 3  # the two are far apart to begin with
    out, levels = normalize(as_tensor(wave), RATE, Normalize.lufs, -14.0, -1.0)
    assert abs(measured(out) - -14.0) < 0.5
    assert not levels.peak_limited and peak_db(out) < -1.0
    assert abs(levels.before_lufs - measured(wave)) < 0.01 and abs(levels.after_lufs - measured(out)) < 0.01


def test_peak_mode_puts_the_sample_peak_at_its_target():
    out, levels = normalize(as_tensor(quiet()), RATE, Normalize.peak, -14.0, -3.0)
    assert abs(peak_db(out) - -3.0) < 0.01 and levels.after_peak_db == -3.0


def test_lufs_gain_stops_at_the_peak_target_rather_than_clip():
    """Sparse clicks: a high peak for their loudness, so -14 LUFS would put the peak far above full scale."""
    wave = np.zeros((6 * RATE, 2))
    wave[:: RATE // 4] = 0.5
    out, levels = normalize(as_tensor(wave), RATE, Normalize.lufs, -14.0, -1.0)
    assert levels.peak_limited and abs(peak_db(out) - -1.0) < 0.01
    assert measured(out) < -14.5 and levels.after_lufs < -14.5


def test_silence_keeps_its_level():
    out, levels = normalize(torch.zeros(2, RATE), RATE, Normalize.lufs, -14.0, -1.0)
    assert torch.equal(out, torch.zeros(2, RATE)) and levels.gain_db == 0 and levels.before_lufs is None


def test_preprocessing_records_the_levels_and_redoes_the_songs_when_the_mode_changes(tmp_path):
    songs = tmp_path / "songs"
    songs.mkdir()
    soundfile.write(songs / "quiet.wav", quiet()[:RATE], RATE)
    soundfile.write(songs / "loud.wav", brick_walled()[:RATE], RATE)
    plain = settings(tmp_path, songs)
    run(plain)
    assert "loudness" not in json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert "loudness" not in header(tmp_path / "out" / "quiet.safetensors")

    lufs = settings(tmp_path, songs, "normalize=lufs", "target_lufs=-16")
    assert sorted(run(lufs).processed) == ["loud", "quiet"]  # the mode is part of what makes a song up to date
    entries = json.loads((tmp_path / "out" / MANIFEST).read_text())["loudness"]
    for name, before in (("quiet", -38), ("loud", -7)):
        entry = entries[f"{name}.safetensors"]
        assert abs(entry["before_lufs"] - before) < 3 and abs(entry["after_lufs"] - -16) < 0.5, entry
        assert entry == header(tmp_path / "out" / f"{name}.safetensors")["loudness"]
    assert run(lufs).processed == []
    hashes = {tuple(o): {s.name: s.settings_hash for s in find_songs(settings(tmp_path, songs, *o), "tiny")[0]}
              for o in [(), ("normalize=lufs", "target_lufs=-16"), ("normalize=lufs", "target_lufs=-12"),
                        ("normalize=peak",), ("normalize=peak", "target_lufs=-12")]}
    assert len({json.dumps(h, sort_keys=True) for h in hashes.values()}) == 4  # the LUFS target is no peak setting


@pytest.mark.parametrize("override, key", [("target_lufs=3", "target_lufs"), ("target_peak_db=0.5", "target_peak_db")])
def test_targets_that_would_clip_are_refused_naming_the_option(tmp_path, override, key):
    (tmp_path / "songs").mkdir()
    with pytest.raises(ConfigError, match=key):
        settings(tmp_path, tmp_path / "songs", "normalize=lufs", override)
