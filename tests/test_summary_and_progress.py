"""The numbers the user reads before and during training: the setup summary's sizes and memory, the progress line's
speed and time left (over the last steps), the step lines train.log gets under a live bar, and Ctrl-C said once."""

import logging
import math
import os
import re
import signal

import pytest
import torch

from sidestep.models.source import model_source
from sidestep.models.tiny import write_checkpoints
from sidestep.sizes import binary_size
from sidestep.step_rate import StepRate
from sidestep.training.interrupts import StopRequest
from sidestep.training.live_samples import sampling_summary
from sidestep.training.memory import predict
from sidestep.training.prepare import prepared_run
from sidestep.ui.console import console
from sidestep.ui.progress import TrainingProgress
from sidestep.ui.summary import show


def test_sizes_are_in_the_unit_that_reads(make_cfg):
    assert binary_size(512) == "512 B"
    assert binary_size(8 * 28_672 * 2) == "448.0 KiB"
    assert binary_size(7 * 2**20) == "7.00 MiB"
    assert binary_size(2.53 * 2**30) == "2.53 GiB"


def test_the_demos_summary_shows_its_small_adapter_in_kib_and_its_memory_in_mb(make_cfg, tmp_path):
    cfg = make_cfg("adapter.rank=8", "export.dtype=bf16", "sample.every_n_epochs=50")
    with prepared_run(cfg, tmp_path) as run, console.capture() as shown:
        show(run.plan)
    text = re.sub(r"[\s│]+", " ", shown.get())  # the table's cells joined, whatever width wrapped them
    assert "28.0 KiB as a PEFT adapter file" in text, text  # 14,336 parameters in bf16, not "0.0 MiB"
    peak, samples = re.search(r"~([\d.]+) MB peak.*while sampling, ([\d.]+) MB", text).groups()
    assert float(samples) < float(peak) < 50, text  # the tiny helpers, not the 2B stack's 5 GB


def test_the_sampling_helpers_are_counted_from_the_weights_that_will_load(make_cfg, tmp_path):
    tiny = make_cfg()
    write_checkpoints(tiny.model, tmp_path)
    from_folder = make_cfg("model=turbo", f"model.checkpoint_dir={tmp_path}")
    counted = model_source(from_folder.model).helper_parameters()
    assert counted.keys() == {"vae", "text_encoder", "condition_encoder"}
    real = model_source(from_folder.model)
    loaded = {"vae": real.vae(), "text_encoder": real.text_encoder()[0], "condition_encoder": real.condition_encoder()}
    for name, model in loaded.items():
        assert counted[name] == sum(p.numel() for p in model.parameters()) + sum(
            b.numel() for b in model.buffers() if b.numel() > 64), name  # rotary tables are computed, not stored
    assert model_source(tiny.model).helper_parameters() == pytest.approx(counted, rel=1e-3)  # tiny: from the config


def test_samples_off_means_no_helpers_and_a_long_interval_still_samples_the_final_adapter(make_cfg):
    off = make_cfg("sample.every_n_epochs=null", "sample.duration=4")
    assert sampling_summary(off, [100] * 8, 2, 10, 4).startswith("off")
    assert predict(off, torch.float32, 100).sampling == 0
    rare = make_cfg("sample.every_n_epochs=1000", "sample.duration=4")  # longer than the run: the final adapter's round is all there is
    assert "2 prompts x 4 s at step 10:" in sampling_summary(rare, [100] * 8, 2, 10, 4)  # one round: not "1 points"
    one = make_cfg("sample.every_n_epochs=1", "sample.duration=4", "sample.count=1")
    assert sampling_summary(one, [100] * 8, 2, 10, 4).startswith("1 prompt x 4 s at 5 points (steps 2, 4, 6, 8, ...)")
    assert predict(rare, torch.float32, 100).sampling > 0


def test_the_rate_and_time_left_are_taken_over_the_last_steps():
    rate = StepRate(total_steps=1000, window=100)
    rate.start(500, 0.0)  # a resumed run: its first 500 steps were not run here
    assert math.isnan(rate.seconds_left)
    rate.mark(501, 2.0)
    assert rate.per_second == 0.5 and rate.seconds_left == 998
    now, lefts = 2.0, []
    for step in range(502, 800):
        now += 61.0 if step == 600 else 1.0  # a minute of samples after step 599
        rate.mark(step, now)
        lefts.append(rate.seconds_left / (1000 - step))  # seconds per step it counts on
    assert max(lefts) < 1.7 and max(b / a for a, b in zip(lefts, lefts[1:])) < 1.7  # a pause moves it a little
    assert lefts[-1] == 1.0  # and is forgotten 100 steps later


def test_the_bar_shows_the_smoothed_time_left_and_the_log_file_gets_step_lines(tmp_path, caplog):
    now = [0.0]
    file = logging.FileHandler(tmp_path / "train.log")
    logging.getLogger().addHandler(file)
    try:
        with caplog.at_level(logging.INFO), TrainingProgress(1000, 10, False, 2, clock=lambda: now[0]) as progress:
            progress.start_at(500)
            for step in (501, 502):
                now[0] += 2.0
                progress.update(step, 5, 1.5, 1e-4)
    finally:
        logging.getLogger().removeHandler(file)
        file.close()
    assert progress.bar.tasks[0].fields["eta"] == "16m36s"  # 498 steps at 2 s, not "499 steps at 502 in 4 s"
    lines = (tmp_path / "train.log").read_text().splitlines()
    assert lines == ["step 502/1000  epoch 6/10  loss 1.5000  lr 1.00e-04  0.50 it/s  eta 16m36s"]
    assert not [r for r in caplog.records if r.getMessage().startswith("step")]  # the console shows the bar instead


def test_ctrl_c_is_said_once_by_the_training_process_not_by_its_data_loader_workers(caplog, monkeypatch):
    stop = StopRequest()
    with caplog.at_level(logging.WARNING), stop:
        trainer = os.getpid()
        monkeypatch.setattr(os, "getpid", lambda: trainer + 1)  # a worker forked while the handler is installed
        stop._handle(signal.SIGINT, None)
        assert not caplog.records
        monkeypatch.undo()
        stop._handle(signal.SIGINT, None)
    assert stop.requested and [r.getMessage().split(":")[0] for r in caplog.records] == ["SIGINT received"]


@pytest.fixture(autouse=True)
def _no_handlers_left(request):
    before = list(logging.getLogger().handlers)
    yield
    assert logging.getLogger().handlers == before
