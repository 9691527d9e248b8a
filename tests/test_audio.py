"""Audio in and out: every format users bring decodes to 48 kHz stereo, bad files say why, WAVs we write read back."""

import errno
import hashlib
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from sidestep.data import audio as audio_module
from sidestep.data.audio import (
    SAMPLE_RATE,
    AudioError,
    audio_seconds,
    find_audio,
    load_audio,
    write_wav,
)
from sidestep.digest import file_hash
from sidestep.errors import DataError
from tests.helpers.audio import write_with_ffmpeg


def sine(rate: int, seconds: float, freq: float = 1000.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path: Path, data: np.ndarray, rate: int, **kwargs) -> Path:
    soundfile.write(path, data, rate, **kwargs)
    return path


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3"])
@pytest.mark.parametrize("rate,channels", [(44_100, 1), (48_000, 2)])
def test_each_format_decodes_to_48k_stereo(tmp_path, suffix, rate, channels):
    left = sine(rate, 1.0, 440.0)
    data = left if channels == 1 else np.stack([left, sine(rate, 1.0, 660.0)], axis=1)
    audio = load_audio(write(tmp_path / f"song{suffix}", data, rate), max_seconds=None)
    assert audio.dtype == torch.float32 and audio.shape[0] == 2
    assert abs(audio.shape[1] - SAMPLE_RATE) <= 0.01 * SAMPLE_RATE  # lossy codecs may pad a few ms
    if channels == 1:
        assert torch.equal(audio[0], audio[1])
    else:
        assert (audio[0] - audio[1]).abs().max() > 0.1


def test_resampling_keeps_a_sines_frequency_and_amplitude(tmp_path):
    path = write(tmp_path / "tone.wav", sine(44_100, 1.0, 1000.0, 0.5), 44_100, subtype="FLOAT")
    mono = load_audio(path)[0].numpy()
    assert mono.shape == (SAMPLE_RATE,)
    middle = mono[4800:-4800]  # away from the resampler's edges
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(middle.size)))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / middle.size
    assert abs(peak_hz - 1000.0) < SAMPLE_RATE / middle.size
    assert np.sqrt(2 * np.mean(middle**2)) == pytest.approx(0.5, rel=0.005)


def test_more_than_two_channels_keep_the_first_two(tmp_path):
    data = np.stack([np.full(4800, level, np.float32) for level in (0.1, 0.2, 0.3, 0.4)], axis=1)
    audio = load_audio(write(tmp_path / "quad.wav", data, 48_000, subtype="FLOAT"))
    assert torch.allclose(audio[:, 100], torch.tensor([0.1, 0.2]))


def test_truncation_decodes_only_what_is_kept(tmp_path, monkeypatch):
    path = write(tmp_path / "long.flac", sine(44_100, 3.0), 44_100)
    asked = []
    real_read = soundfile.read

    def counting_read(*args, **kwargs):
        asked.append(kwargs["frames"])
        return real_read(*args, **kwargs)

    monkeypatch.setattr(audio_module.soundfile, "read", counting_read)
    audio = load_audio(path, max_seconds=1.0)
    assert audio.shape == (2, SAMPLE_RATE)
    assert 44_100 <= asked[0] < 1.2 * 44_100
    assert torch.allclose(audio, load_audio(path)[:, :SAMPLE_RATE], atol=1e-3)


def test_audio_seconds_reads_the_header(tmp_path):
    assert audio_seconds(write(tmp_path / "a.ogg", sine(44_100, 1.5), 44_100)) == pytest.approx(1.5)


def _corrupt(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _nan(path: Path) -> None:
    data = sine(48_000, 0.5)
    data[1000] = np.nan
    soundfile.write(path, data, 48_000, subtype="FLOAT")


@pytest.mark.parametrize("name,make,reason", [
    ("corrupt.wav", _corrupt, "unreadable or corrupt"),
    ("empty.wav", lambda p: p.write_bytes(b""), "zero length"),
    ("no_frames.wav", lambda p: soundfile.write(p, np.zeros((0, 2), np.float32), 48_000), "zero length"),
    ("silent.flac", lambda p: soundfile.write(p, np.full(48_000, 5e-5, np.float32), 48_000, subtype="PCM_24"),
     "silent"),
    ("song.m4a", lambda p: p.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(64)), "unreadable or corrupt"),
    ("bought.m4p", lambda p: p.write_bytes(b"\x00\x00\x00\x20ftypM4P " + bytes(64)), "copy-protected"),
    ("nan.wav", _nan, "NaN"),
])
def test_bad_files_say_why(tmp_path, name, make, reason):
    path = tmp_path / name
    make(path)
    with pytest.raises(AudioError, match=reason) as caught:
        load_audio(path, max_seconds=30)
    assert isinstance(caught.value, DataError) and str(path) in str(caught.value)


def test_write_wav_round_trips_through_the_stdlib_wave_module(tmp_path):
    audio = torch.linspace(-1.5, 1.5, 2 * 4800).reshape(2, 4800)
    target = tmp_path / "out" / "render.wav"
    write_wav(target, audio)
    with wave.open(str(target)) as f:
        assert (f.getnchannels(), f.getframerate(), f.getsampwidth(), f.getnframes()) == (2, SAMPLE_RATE, 2, 4800)
        pcm = np.frombuffer(f.readframes(4800), dtype="<i2").reshape(4800, 2).T
    assert np.abs(pcm / 32767 - audio.clamp(-1, 1).numpy()).max() < 2 / 32767
    assert [p.name for p in target.parent.iterdir()] == ["render.wav"]


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    target = tmp_path / "render.wav"
    write_wav(target, torch.zeros(2, 100))
    before = target.read_bytes()

    write_bytes = Path.write_bytes

    def broken_write(path, data):  # the disk fills up half-way through the file
        write_bytes(path, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", broken_write)
    with pytest.raises(OSError):
        write_wav(target, torch.ones(2, 100) * 0.5)
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["render.wav"]


def test_file_hash_is_the_sha256_of_the_bytes(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 10)
    assert file_hash(path, chunk_bytes=7) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_find_audio_sorts_supported_from_unsupported_and_skips_the_rest(tmp_path):
    for name in ["b.wav", "a/c.FLAC", "d.mp3", "e.m4a", "f.wma", "h.m4p", ".hidden.wav", ".cache/g.wav", "b.txt",
                 "b.json", "cover.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    supported, unsupported = find_audio(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in supported] == ["a/c.FLAC", "b.wav", "d.mp3", "e.m4a", "f.wma"]
    assert [p.name for p in unsupported] == ["h.m4p"]
    with pytest.raises(DataError, match="no such folder"):
        find_audio(tmp_path / "missing")


@pytest.mark.parametrize("name, channels", [("phone.m4a", 2), ("voice memo.aac", 1)])
def test_m4a_and_aac_songs_decode_to_48k_stereo(tmp_path, name, channels):
    path = tmp_path / name
    write_with_ffmpeg(path, channels=channels)
    assert abs(audio_seconds(path) - 1.5) < 0.1
    audio = load_audio(path)
    assert audio.shape[0] == 2 and abs(audio.shape[1] / 48_000 - 1.5) < 0.1
    if channels == 1:
        assert torch.equal(audio[0], audio[1])  # mono is duplicated
    spectrum = np.abs(np.fft.rfft(audio[0, 4_800:52_800].numpy()))  # one second, past the encoder's priming
    assert abs(np.argmax(spectrum) - 440) <= 1 and 0.2 < float(audio.abs().max()) < 0.4  # the tone, at its level
    cut = load_audio(path, max_seconds=0.5)
    assert cut.shape == (2, 24_000) and torch.allclose(cut, audio[:, :24_000], atol=1e-4)
