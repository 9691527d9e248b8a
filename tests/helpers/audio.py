"""Songs written to disk (WAV/FLAC/MP3 by soundfile, AAC by PyAV's FFmpeg), the preprocess config that reads a
folder of them, and the label header of a written sample."""

import json
from pathlib import Path

import numpy as np
import soundfile
from hydra import compose, initialize_config_module
from safetensors import safe_open

from sidestep.config.checks import checked_preprocess_config
from sidestep.data.samples import METADATA_KEY

SECONDS = 0.8


def write_song(path: Path, rate: int, channels: int, seconds: float = SECONDS, kind: str = "sine") -> Path:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 440 * t) if kind == "sine" else 0.1 * np.random.default_rng(0).standard_normal(len(t))
    data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
    soundfile.write(path, data, rate)
    return path


def write_with_ffmpeg(path, rate=44_100, seconds=1.5, channels=2):
    """An AAC song as iTunes (.m4a, in MP4) or a raw ADTS stream (.aac) holds it, made by PyAV's FFmpeg."""
    import av

    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    layout = "stereo" if channels == 2 else "mono"
    with av.open(str(path), "w", format="adts" if path.suffix == ".aac" else "ipod") as out:
        stream = out.add_stream("aac", rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.stack([wave] * channels), format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return wave


def settings(tmp_path, audio_dir, *overrides):
    """The checked config of `python -m sidestep.preprocess audio_dir=<audio_dir> out_dir=<tmp_path>/out model=tiny`."""
    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        cfg = compose(config_name="preprocess", overrides=[f"audio_dir={audio_dir}", f"out_dir={tmp_path / 'out'}",
                                                            "model=tiny", *overrides])
    return checked_preprocess_config(cfg)


def header(path: Path) -> dict:
    with safe_open(path, framework="pt") as f:
        return json.loads(f.metadata()[METADATA_KEY])
