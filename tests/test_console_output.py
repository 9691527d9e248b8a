"""What a training run says, in the console and in train.log: only our own lines (no library's progress bars,
warnings, prints or INFO logs), the log holds what the console showed (the setup summary, the step lines, in plain
text), the last line says where to look, and the run dir and the adapter files carry the same start time.

One run of the CLI serves the tests of this module: on a tiny checkpoints folder (so the text encoder loads through
transformers as a real one does), with Prodigy (which prints), a sample round and the report (which reads
TensorBoard's files), and a clock that moves one second each time Hydra's `${now:}` reads it.
"""

import re
import subprocess
import sys

import pytest

from sidestep.models.tiny import write_checkpoints
from tests.helpers.configs import compose_cfg

THIRD_PARTY = [
    r"Loading weights", r"Writing model shards", r"Loading checkpoint shards",  # transformers/diffusers tqdm bars
    r"\d+%\|", r"it/s\]",  # any other tqdm bar
    r"FutureWarning", r"weight_norm",  # torch, through diffusers' VAE
    r"decoupled weight decay",  # Prodigy's print
    r"No path found after", r"\[tensorboard\]",  # TensorBoard's event reader at INFO
    r"gemm_4bit_forward",  # bitsandbytes at import
]
pytestmark = pytest.mark.slow  # one real `python` start: what libraries print while they import is checked too
ONE_SECOND_PER_READ = """
import datetime, itertools, sys
import hydra.core.utils
ticks = itertools.count()
class Clock(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime.datetime(2026, 12, 2, 0, 6, 57) + datetime.timedelta(seconds=next(ticks))
hydra.core.utils.datetime = Clock  # what its ${now:} resolver reads
from sidestep.train import main
from sidestep.ui.app import run_app
run_app(main, check_schema=True)
"""


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, cache_dir):
    tmp = tmp_path_factory.mktemp("console")
    checkpoints = tmp / "checkpoints"
    write_checkpoints(compose_cfg(cache_dir).model, checkpoints)
    args = ["experiment=demo", "model=turbo", f"model.checkpoint_dir={checkpoints}", f"data.synthetic.cache_dir={cache_dir}",
            "optimizer=prodigy", "optimizer.lr=1", "trainer.max_steps=4", "trainer.log_every=2", "sample.every_n_epochs=null",
            "sample.every_n_steps=4", "sample.count=1", "sample.duration=1", "sample.steps=2", "ui.yes=true"]
    proc = subprocess.run([sys.executable, "-c", ONE_SECOND_PER_READ, *args], capture_output=True, text=True, timeout=600,
                          cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp / "outputs").glob("*/*")
    return proc.stdout, proc.stderr, (run / "train.log").read_text(), run


def test_no_library_speaks_in_the_console_or_the_log(demo_run):
    stdout, stderr, log, _ = demo_run
    for where, text in (("console", stdout + stderr), ("train.log", log)):
        found = [p for p in THIRD_PARTY if re.search(p, text)]
        assert not found, (where, found, text[-3000:])
    assert stderr.strip() == "", stderr[-3000:]


def test_the_log_holds_the_summary_and_the_step_lines_in_plain_text(demo_run):
    stdout, _, log, _ = demo_run
    assert "\x1b" not in log
    assert re.search(r"\] Side-Step run\n  run dir: .+\n  model: ", log), log[:3000]
    for row in ("adapter", "optimizer", "samples", "memory"):
        assert re.search(rf"^  {row}: ", log, re.M), row
    for step in ("step 2/4", "step 4/4"):
        assert step in stdout and step in log


def test_the_demos_memory_row_counts_its_own_tiny_helpers(demo_run):
    """Not the 2B stack's 5 GB of sampling helpers: the tiny VAE, text encoder and condition encoder."""
    _, _, log, _ = demo_run
    row = re.search(r"^  memory: (.*)$", log, re.M).group(1)
    peak, samples = re.search(r"~([\d.]+) MB peak", row), re.search(r"while sampling, ([\d.]+) MB", row)
    assert peak and samples, row
    assert 1 < float(samples.group(1)) < float(peak.group(1)) < 50, row


def test_the_last_line_says_where_to_look(demo_run):
    stdout, _, log, run = demo_run
    for text in (stdout, log):
        last = text.strip().splitlines()[-1]
        assert str(run / "report.html") in last and str(run / "adapter") in last, last


def test_the_run_dir_and_the_adapter_files_have_one_start_time(demo_run):
    _, _, _, run = demo_run
    assert re.fullmatch(r"demo-20261202-00\d{4}", run.name), run.name
    assert [p.name for p in (run / "adapter" / "comfyui").iterdir()] == [f"{run.name}.safetensors"]
    assert (run / "adapter" / "acestep" / run.name).is_dir()
