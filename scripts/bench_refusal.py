"""Seconds from `python -m sidestep.train ...` to the one-line refusal of a config the checks refuse.

The checks work on the schemas, so a refusal imports neither torch nor diffusers, PEFT or transformers: it costs the
interpreter, Hydra composing the config, and the checks. Each refusal runs in a fresh process, several times; the
median is printed, with the machine's load average (a busy box is slower).

    python scripts/bench_refusal.py [--runs 5]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

REFUSALS = {
    "adapter.rank=0": ["adapter.rank=0"],
    "OFT block size 7": ["adapter=oft", "adapter.block_size=7"],
    "optimizer.lr=0": ["optimizer.lr=0"],
}


def seconds_to_refusal(overrides, run_dir: str) -> float:
    cmd = [sys.executable, "-m", "sidestep.train", "experiment=demo", "ui.yes=true", f"hydra.run.dir={run_dir}",
           *overrides]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 2 or not done.stderr.strip().splitlines()[-1].startswith("error: "):
        raise SystemExit(f"{' '.join(overrides)} was not refused: exit {done.returncode}\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in REFUSALS.items():
            times = [seconds_to_refusal(overrides, os.path.join(tmp, f"run{i}")) for i in range(args.runs)]
            print(f"{name:>20}: median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f})")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
