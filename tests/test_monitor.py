"""The monitor follows runs from their files alone: a finished tiny run in detail, a sweep one line per job, a live
run's progress and ETA, the GPU gauge only where `nvidia-smi` answers. The sweep it watches runs in a terminal
with `ui.plain=true`, which must mean plain log lines, no escape codes, and one question for the whole sweep."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from sidestep.errors import Interrupted
from sidestep.monitor import Reader, find_runs, main
from sidestep.run_status import RunStatus, read_status
from sidestep.ui.console import console
from sidestep.ui.gpu import profile_for
from tests.helpers.processes import start_in_terminal
from tests.helpers.terminal import HANG_GUARD


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """In-process snapshots at a fixed width: pytest's COLUMNS=80 would fold the long temporary paths."""
    monkeypatch.setattr(console, "width", 250)


def monitor(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250"}  # pytest's own COLUMNS=80 would fold the long paths
    return subprocess.run([sys.executable, "-m", "sidestep.monitor", *args], capture_output=True, text=True,
                          env=env)


@pytest.mark.slow
def test_a_plain_sweep_in_a_terminal_asks_once_and_the_monitor_follows_its_jobs(tmp_path, cache_dir):
    """Issue 27: every job asked "Start training? [y/n]". Now the sweep shows its jobs and their steps, asks once (saying
    how to skip the question), and no job asks again."""
    sweep = tmp_path / "sweep"
    command = start_in_terminal("sidestep.train", "-m", "experiment=demo", "adapter.rank=2,4", "trainer.max_steps=6",
                                "trainer.save_every_steps=6", "trainer.log_every=3", "optimizer.lr=0.1", "ui.plain=true",
                                f"data.synthetic.cache_dir={cache_dir}", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
                                timeout=HANG_GUARD)
    command.child.expect_exact("Start the 2 runs? (ui.yes=true skips this question)")
    grid = command.child.before
    command.child.sendline("y")
    output = command.child.read()
    assert command.finish() == 0, output[-3000:]
    assert re.search(r"\b0\W+adapter\.rank=2\W+6\b", grid) and re.search(r"\b1\W+adapter\.rank=4\W+6\b", grid), grid
    assert "2 runs, 12 optimizer steps in all" in grid
    assert "\x1b[" not in output  # no colour, no live bar, though stdout is a terminal
    assert re.search(r"INFO step 6/6  epoch 3/3  loss \d+\.\d{4}", output)
    assert "Start training?" not in output and "Start the" not in output  # no job asks again
    assert "★ best" in output  # a large lr: the two ranks end apart (a tie marks none)

    job = sweep / "0"
    status = read_status(job)
    assert (status["state"], status["step"], status["total_steps"], status["epochs"]) == ("finished", 6, 6, 3)
    detail = monitor(str(job))
    assert detail.returncode == 0, detail.stderr
    text = detail.stdout
    for pattern in (rf"state\s+finished: adapter written to {re.escape(str(job / 'adapter'))} \(updated (\d+m)?\d+s ago\)",
                    r"setup\s+model tiny, LoRA rank 2 / alpha 4 on q_proj\+k_proj\+v_proj\+o_proj, AdamW lr 0.1",
                    r"progress\s+\S+ 100%  step 6/6  epoch 3/3",
                    rf"loss\s+{status['loss']:.4f} smoothed \(first \d+\.\d{{4}}, best \d+\.\d{{4}}\)  last step \d+\.\d{{4}}",
                    r"curve\s+\S\S  \d+\.\d{3} -> \d+\.\d{3}  steps 3-6",
                    r"lr\s+\d\.\d\de-0\d  grad norm \d+\.\d{3}",
                    r"checkpoint\s+step-0000006 \((\d+m)?\d+s ago; 1 kept\)",
                    r"log\s+.*done: listen and compare in .*report"):
        assert re.search(pattern, text), (pattern, text)
    assert "gpu" not in text and "\x1b[" not in text  # no nvidia-smi here; piped output is plain

    table = monitor(str(sweep), "--once")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert f"{sweep}: 2 run(s), 2 finished" in lines[0]
    for job, rank in (("0", 2), ("1", 4)):
        row = next(line for line in lines if line.split()[:1] == [job])
        assert re.fullmatch(rf"{job}\s+finished\s+6/6\s+\d\.\d{{4}}\s+\d+\.\d\d\s+-\s+step-0000006\s+"
                            rf"experiment=demo adapter.rank={rank} .*", row.strip()), row


@pytest.fixture
def clock(monkeypatch):
    """The monitor's "now", fixed: "updated 5s ago" cannot become 6s on a slow machine."""
    import sidestep.monitor

    now = time.time()
    monkeypatch.setattr(sidestep.monitor, "time", SimpleNamespace(time=lambda: now, sleep=time.sleep,
                                                                  strftime=time.strftime))
    return now


def fake_run(root, state="running", step=40, updated_ago=5.0, now=None):
    """A run dir as the trainer leaves it mid-run: config, status, one finished and one half-written checkpoint
    (written 10 s before `now`)."""
    run = root / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(
        "model: {variant: base}\nlora: {rank: 64, alpha: 128, target_modules: [q_proj, v_proj]}\n"
        "optimizer: {_target_: torch.optim.AdamW, lr: 0.0001}\n"
        "trainer: {batch_size: 1, gradient_accumulation: 4, epochs: 100, max_steps: null, log_every: 10}\n")
    now = time.time() if now is None else now
    (run / "status.json").write_text(json.dumps({
        "state": state, "step": step, "total_steps": 400, "epoch": 11, "epochs": 100, "loss": 0.5, "lr": 1e-4,
        "it_per_s": 2.0, "eta_s": 180.0, "started_at": now - 25, "updated_at": now - updated_ago}))
    (run / "checkpoints" / "step-0000030").mkdir(parents=True)
    (run / "checkpoints" / "step-0000030" / "trainer_state.json").write_text("{}")
    (run / "checkpoints" / ".tmp-step-0000040").mkdir()
    os.utime(run / "checkpoints" / "step-0000030" / "trainer_state.json", (now - 10, now - 10))
    return run


def test_a_running_run_shows_progress_eta_and_the_checkpoint_being_written(tmp_path, capsys, clock):
    run = fake_run(tmp_path, now=clock)
    main([str(run), "--once"])
    out = capsys.readouterr().out
    assert re.search(r"state\s+running \(updated 5s ago\)", out)
    assert re.search(r"progress\s+\S+  10%  step 40/400  epoch 11/100", out)
    assert re.search(r"speed\s+2\.00 it/s  elapsed 2\ds  ETA 3m00s", out)
    assert re.search(r"checkpoint\s+step-0000030 \(10s ago; 1 kept\), writing step-0000040", out)
    assert "adapter" not in out


def test_a_run_that_stopped_updating_is_flagged(tmp_path, capsys, clock):
    main([str(fake_run(tmp_path, updated_ago=3600, now=clock)), "--once"])
    assert "running?: no update for a while; the process may have died (updated 1h00m ago)" in capsys.readouterr().out


def test_the_gpu_gauge_comes_from_nvidia_smi_when_there_is_one(tmp_path, monkeypatch, capsys):
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho '0, NVIDIA H100 80GB HBM3, 87, 40960, 81559'\necho '1, NVIDIA H100 80GB HBM3, [N/A], 0, 81559'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{monkeypatch.delenv('PATH', raising=False) or '/usr/bin:/bin'}")
    main([str(fake_run(tmp_path)), "--once"])
    out = capsys.readouterr().out
    assert "gpu 0  NVIDIA H100 80GB HBM3: 87% busy, 40.0 / 79.6 GiB" in out
    assert "gpu 1  NVIDIA H100 80GB HBM3: ? busy, 0.0 / 79.6 GiB" in out


def test_status_file_follows_the_run_and_records_how_it_ended(tmp_path):
    with RunStatus(tmp_path, total_steps=20, epochs=2, first_step=0, log_every=10, enabled=True) as status:
        assert read_status(tmp_path)["state"] == "running"
        status.update(5, 0, 1.5, 1e-3)
        assert read_status(tmp_path)["step"] == 0  # between logging steps nothing is written
        status.update(10, 0, 1.25, 1e-3)
        assert (read_status(tmp_path)["step"], read_status(tmp_path)["loss"]) == (10, 1.25)
    status.finished(tmp_path / "adapter")
    assert read_status(tmp_path)["state"] == "finished"
    for error, state in ((Interrupted("stopped by SIGTERM; checkpoint x", 143), "stopped"), (RuntimeError("boom"), "failed")):
        with pytest.raises(type(error)), RunStatus(tmp_path, 20, 2, 10, 10, True):
            raise error
        assert (read_status(tmp_path)["state"], read_status(tmp_path)["error"]) == (state, str(error).splitlines()[0])
    with RunStatus(tmp_path / "other", 20, 2, 0, 10, enabled=False):  # not the main process: writes nothing
        pass
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_plain_in_a_terminal_is_one_snapshot_without_escape_codes(tmp_path):
    command = start_in_terminal("sidestep.monitor", str(fake_run(tmp_path)), "ui.plain=true", cwd=tmp_path,
                                timeout=HANG_GUARD)
    output = command.child.read()  # returns: a running run, yet no live refresh in plain mode
    assert command.finish() == 0 and "step 40/400" in output and "\x1b[" not in output, output


def test_runs_are_found_in_a_sweep_or_a_folder_of_runs(tmp_path, capsys):
    for job in ("10", "2", "1/nested", "0/sweep-1/0"):  # the last: a sweep's job seen from outputs/
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "config.yaml").write_text("{}")
    (tmp_path / "2" / ".hydra" / "overrides.yaml").write_text("- adapter.target_modules=[q_proj,v_proj]\n")
    assert [p.relative_to(tmp_path).as_posix() for p in find_runs(tmp_path)] == ["0/sweep-1/0", "1/nested", "2", "10"]
    assert find_runs(tmp_path / "2") == [tmp_path / "2"]
    assert Reader(tmp_path).snapshot(tmp_path / "2").state == "no status"
    main([str(tmp_path), "--once"])
    out = capsys.readouterr().out
    assert f"{tmp_path}: 4 run(s), 4 no status" in out
    assert "adapter.target_modules=[q_proj,v_proj]" in out  # brackets are text, not rich markup


@pytest.mark.parametrize("gib, profile", [(6.0, "8gb"), (7.8, "8gb"), (11.7, "12gb"), (15.6, "16gb"), (23.6, "24gb_plus"),
                                          (79.1, "24gb_plus")])
def test_detected_memory_picks_the_largest_profile_the_card_holds(gib, profile):
    assert profile_for(gib, ["12gb", "16gb", "24gb_plus", "8gb"]) == profile


def pruning_checkpoints_after_listing(monkeypatch):
    """Training prunes the oldest checkpoint just after a reader listed `checkpoints/` (issue 27: the monitor died
    with FileNotFoundError on its trainer_state.json)."""
    real_glob = Path.glob

    def glob(self, pattern):
        found = list(real_glob(self, pattern))
        yield from found
        if pattern == "step-*" and self.name == "checkpoints" and found:
            shutil.rmtree(min(found))

    monkeypatch.setattr(Path, "glob", glob)


def test_a_checkpoint_pruned_while_the_monitor_reads_is_skipped(tmp_path, monkeypatch, capsys):
    run = fake_run(tmp_path)
    (run / "checkpoints" / "step-0000020").mkdir()
    (run / "checkpoints" / "step-0000020" / "trainer_state.json").write_text("{}")
    pruning_checkpoints_after_listing(monkeypatch)
    main([str(run), "--once"])
    out = capsys.readouterr().out
    assert re.search(r"checkpoint\s+step-0000030 \(\d+s ago; 1 kept\)", out), out
