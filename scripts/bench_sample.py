"""What listening costs: seconds per rendered sample, and how much longer a training run takes when it renders
samples every N steps (`sample.every_n_steps`) than the same run without.

Runs the demo recipe (tiny model, CPU) in this process: first the run without samples, then with them, then the
first again, so drift between the two cancels; each sampling point renders `sample.count` prompts.

    python scripts/bench_sample.py [--steps 60] [--every 20] [--duration 10]
Prints the time per sample and ends with `slowdown_ratio=<with samples / without>`.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_module

from sidestep.config import checked_train_config, register_schemas
from sidestep.train import train_adapter


def config(steps: int, cache: str, *extra: str):
    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "experiment=demo", "ui.yes=true", "ui.plain=true", f"trainer.max_steps={steps}",
            "sample.every_n_epochs=null", f"data.synthetic.cache_dir={cache}", *extra])
    return checked_train_config(cfg)


def timed_run(cfg) -> float:
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.perf_counter()
        train_adapter(cfg, Path(run_dir))
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    register_schemas()
    with tempfile.TemporaryDirectory() as cache:
        quiet = config(args.steps, cache)
        listening = config(args.steps, cache, f"sample.every_n_steps={args.every}", f"sample.duration={args.duration}")
        timed_run(quiet)  # warm-up: data generation, imports, first kernels
        without = [timed_run(quiet)]
        with_samples = [timed_run(listening)]
        without.append(timed_run(quiet))
    samples = (args.steps // args.every) * listening.sample.count
    extra = statistics.mean(with_samples) - statistics.mean(without)
    print(f"{args.steps} steps: {statistics.mean(without):.2f} s without samples, {statistics.mean(with_samples):.2f} s "
          f"with {samples} samples of {args.duration:g} s (first one loads the VAE and encoders)")
    print(f"per sample: {extra / samples:.2f} s")
    print(f"slowdown_ratio={statistics.mean(with_samples) / statistics.mean(without):.3f}")


if __name__ == "__main__":
    main()
