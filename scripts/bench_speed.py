"""Where a CPU training step's time goes beyond the model: compiled blocks, padding, waiting for data.

    python scripts/bench_speed.py                 # all three parts
    python scripts/bench_speed.py --skip-compile  # padding and loader only (compiling takes minutes on a CPU)

1. torch.compile of the transformer blocks at real width (hidden 2048, 2 layers, 250 frames, LoRA r64): compile
   seconds (first steps beyond the eager ones) and the median s/step after, eager and compiled, in one process.
2. Padded-token fraction of batch 4 over mixed-length whole songs (30 s to 4 min), without and with bucketing,
   and the fraction of frames bucketing cuts away to reach a common length.
3. The fraction of step time spent waiting for the next batch at batch 4 (`fit` with the default loader).
Ends with `compile_speedup=`, `padded_fraction_plain=`, `padded_fraction_bucketed=` and `loader_wait_fraction=`.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from accelerate import data_loader
from bench_step import REAL_WIDTH, project_config

from sidestep.config import register_schemas
from sidestep.data.collate import CropCollate
from sidestep.data.sampler import EpochSampler
from sidestep.train import train_adapter

SONG_FRAMES = [int(s * 25) for s in (30, 45, 62, 75, 90, 104, 118, 131, 150, 163, 177, 190, 205, 221, 233, 240)]


def compile_speedup(steps: int, cache: str) -> float:
    times = {}
    for mode in ("false", "blocks"):
        cfg = project_config([*REAL_WIDTH, f"trainer.compile={mode}"], steps, cache)
        with tempfile.TemporaryDirectory() as run:
            started = time.perf_counter()
            seconds = train_adapter(cfg, Path(run)).step_seconds
            times[mode] = (time.perf_counter() - started, seconds)
    eager, compiled = (statistics.median(times[m][1][3:]) for m in ("false", "blocks"))
    compile_seconds = sum(times["blocks"][1][:3]) - 3 * compiled - (sum(times["false"][1][:3]) - 3 * eager)
    print(f"compile: {compile_seconds:.0f} s to compile the blocks; eager {eager:.3f} s/step, compiled "
          f"{compiled:.3f} s/step (medians of {steps - 3} steps each)", flush=True)
    return eager / compiled


def padding(batch: int = 4, epochs: int = 20):
    """(padded fraction without bucketing, padded fraction with it, fraction cut away with it)."""
    totals = {False: [0, 0, 0], True: [0, 0, 0]}  # padded frames, all frames, frames cut away
    for bucket in (False, True):
        sampler = EpochSampler(len(SONG_FRAMES), 0, lengths=SONG_FRAMES if bucket else None, batch_size=batch)
        collate = CropCollate(0, None, 2, shortest=bucket)
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            order = [i for _, i in sampler]
            for start in range(0, len(order), batch):
                items = [{"target_latents": torch.zeros(SONG_FRAMES[i], 1), "context_latents": torch.zeros(SONG_FRAMES[i], 1),
                          "attention_mask": torch.ones(SONG_FRAMES[i]), "encoder_hidden_states": torch.zeros(1, 1),
                          "encoder_attention_mask": torch.ones(1, dtype=torch.bool), "epoch": epoch, "index": i,
                          "name": str(i)} for i in order[start:start + batch]]
                mask = collate(items)["attention_mask"]
                totals[bucket][0] += int((mask == 0).sum())
                totals[bucket][1] += mask.numel()
                totals[bucket][2] += sum(SONG_FRAMES[i] for i in order[start:start + batch]) - int(mask.sum())
    plain, bucketed = totals[False], totals[True]
    print(f"padding at batch {batch}: {plain[0] / plain[1]:.1%} of frames are padding without bucketing, "
          f"{bucketed[0] / bucketed[1]:.1%} with it ({bucketed[2] / sum(SONG_FRAMES) / epochs:.1%} of the audio cut "
          "away to a common length)", flush=True)
    return plain[0] / plain[1], bucketed[0] / bucketed[1]


def loader_wait(steps: int, cache: str) -> float:
    """Time inside the loader's `next()` during `fit`, over the whole steps' time."""
    waits = []
    original = data_loader.DataLoaderShard.__iter__

    def timed(self):
        iterator = original(self)
        while True:
            started = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            waits.append(time.perf_counter() - started)
            yield batch

    cfg = project_config([*REAL_WIDTH, "trainer.batch_size=4", "data.synthetic.num_samples=16"], steps, cache)
    data_loader.DataLoaderShard.__iter__ = timed
    try:
        with tempfile.TemporaryDirectory() as run:
            seconds = train_adapter(cfg, Path(run)).step_seconds
    finally:
        data_loader.DataLoaderShard.__iter__ = original
    fraction = sum(waits[2:]) / sum(seconds[2:])
    print(f"loader: {fraction:.1%} of step time waiting for data at batch 4 ({cfg.data.num_workers} workers "
          "configured, null = by cores)", flush=True)
    return fraction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--skip-compile", action="store_true")
    args = parser.parse_args()
    register_schemas()
    plain, bucketed = padding()
    with tempfile.TemporaryDirectory() as cache:
        wait = loader_wait(args.steps, cache)
        speedup = None if args.skip_compile else compile_speedup(args.steps, cache)
    print(f"padded_fraction_plain={plain:.3f} padded_fraction_bucketed={bucketed:.3f} loader_wait_fraction={wait:.3f}"
          + ("" if speedup is None else f" compile_speedup={speedup:.3f}"))


if __name__ == "__main__":
    main()
