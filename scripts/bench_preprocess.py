"""Peak memory of preprocessing a long song against a short one: tiled VAE encoding keeps it flat.

Writes one song per length (a sine chord with noise, 44.1 kHz stereo WAV, so decoding and resampling are
measured too) and preprocesses each in a fresh process with the VAE at the real VAE's full-rate width
(128 channels at 48 kHz, where its activations peak) and default 30 s tiles. Prints each run's peak RSS,
seconds of compute per second of audio, and the ratio of the longest song's peak to the shortest's
(target <= 1.3: memory does not grow with song length).

    python scripts/bench_preprocess.py [--seconds 60 240] [--tile 30]
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path


def write_song(path: Path, seconds: float) -> None:
    import numpy as np
    import soundfile

    rate = 44_100
    t = np.arange(int(seconds * rate)) / rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 6
    noise = 0.02 * np.random.default_rng(0).standard_normal((len(t), 2))
    soundfile.write(path, chord[:, None] + noise, rate)


def one(seconds: float, tile: float, workdir: Path) -> dict:
    """Preprocess one song of `seconds` in this process; report its peak memory and time."""
    from hydra import compose, initialize_config_module

    from sidestep.config import register_schemas
    from sidestep.config.checks import checked_preprocess_config
    from sidestep.preprocessing.run import preprocess
    from sidestep.ui.file_progress import FileProgress

    songs = workdir / f"songs-{seconds:g}"
    songs.mkdir()
    write_song(songs / "song.wav", seconds)
    register_schemas()
    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        cfg = compose(config_name="preprocess", overrides=[f"audio_dir={songs}", f"out_dir={workdir / f'out-{seconds:g}'}",
                                                            "model=tiny", "device=cpu", f"tile_seconds={tile}"])
    cfg = checked_preprocess_config(cfg)
    started = time.perf_counter()
    outcome = preprocess(cfg, cfg.model, partial(FileProgress, plain=True))
    assert outcome.processed == ["song"], outcome
    return {"seconds": seconds, "wall_s": time.perf_counter() - started,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[60, 240])
    parser.add_argument("--tile", type=float, default=30)
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.tile, args.workdir)))
        return
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for seconds in args.seconds:
            out = subprocess.run([sys.executable, __file__, "--one", str(seconds), "--tile", str(args.tile),
                                  "--workdir", workdir], capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(result)
            print(f"{seconds:6.0f} s song: peak RSS {result['peak_rss_mb']:7.0f} MB, "
                  f"{result['wall_s'] / seconds:.2f} s of compute per s of audio")
    ratio = results[-1]["peak_rss_mb"] / results[0]["peak_rss_mb"]
    print(f"peak_rss_ratio={ratio:.3f}  ({results[-1]['seconds']:g} s vs {results[0]['seconds']:g} s song; "
          "target <= 1.3)")


if __name__ == "__main__":
    main()
