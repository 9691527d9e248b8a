"""The GPU benchmark is ready for a GPU machine: without one it says so and exits 0, and its whole measuring path
runs on the CPU with a tiny DiT (--smoke), so the first run on a GPU is not its first run at all."""

import re

from tests.helpers.configs import ROOT
from tests.helpers.processes import run_script


def bench_gpu(*args):
    return run_script(ROOT / "scripts" / "bench_gpu.py", *args, cwd=ROOT)


def test_without_a_gpu_the_gpu_benchmark_says_so_and_exits_0():
    proc = bench_gpu()
    assert proc.returncode == 0 and proc.stdout.startswith("bench_gpu: no CUDA GPU here"), proc.stderr[-2000:]


def test_the_gpu_benchmarks_measuring_path_runs_on_the_cpu():
    proc = bench_gpu("--smoke", "--steps", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| 8gb |")]
    assert [tuple(r.split("|")[2:4]) for r in rows] == [(" 1 ", " on "), (" 1 ", " off "), (" 4 ", " on "), (" 4 ", " off ")]
    for row in rows:
        s_step, audio, _, _, ratio = (cell.strip() for cell in row.split("|")[4:9])
        assert float(s_step) > 0 and float(audio) > 0 and float(ratio) > 0
    assert re.search(r"^\| preset \| batch \| checkpointing \| s/step \|", proc.stdout, re.M)
