"""Never lose a night of GPU time: resumed runs equal uninterrupted ones, checkpoints survive crashes,
signals stop cleanly, and bad checkpoints or steps stop with one clear message."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from sidestep.errors import SidestepError
from sidestep.run_status import read_status
from sidestep.train import train_adapter
from sidestep.training import checkpoint as ckpt

# 8 samples, batch 1, accumulation 2: 4 optimizer steps per epoch; dropout on, so the global RNG matters too.
BASE = ("trainer.batch_size=1", "trainer.gradient_accumulation=2", "trainer.max_steps=10", "adapter.dropout=0.1",
        "data.crop_seconds=2")


def adapter(run_dir):
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, cache_dir):
    """One uninterrupted run that checkpoints after every step (and keeps them all)."""
    from tests.conftest import compose_cfg

    run = tmp_path_factory.mktemp("full")
    cfg = compose_cfg(cache_dir, *BASE, "trainer.save_every_steps=1", "trainer.keep_checkpoints=100")
    train_adapter(cfg, run)
    return run


def test_checkpointing_does_not_change_the_trajectory(full_run, make_cfg, tmp_path):
    train_adapter(make_cfg(*BASE), tmp_path)
    assert_same(adapter(full_run), adapter(tmp_path))


@pytest.mark.parametrize("step", [1, 3, 4, 6])  # first step, mid-accumulation epoch, epoch boundary, mid-epoch
def test_resuming_from_any_step_gives_the_uninterrupted_adapter(full_run, make_cfg, tmp_path, step):
    checkpoint = full_run / "checkpoints" / f"step-{step:07d}"
    result = train_adapter(make_cfg(*BASE, f"resume_from={checkpoint}"), tmp_path)
    assert result.steps == 10 and len(result.step_seconds) == 10 - step
    assert_same(adapter(full_run), adapter(tmp_path))


@pytest.mark.parametrize("kind, dropout", [("dora", "adapter.dropout=0.1"), ("lokr", "adapter.rank_dropout=0.1"),
                                           ("loha", "adapter.module_dropout=0.1"), ("oft", "adapter.module_dropout=0.1")])
def test_every_adapter_type_resumes_to_the_uninterrupted_adapter(make_cfg, tmp_path, kind, dropout):
    short = ("trainer.batch_size=2", "trainer.gradient_accumulation=1", "trainer.max_steps=4", "data.crop_seconds=2",
             f"adapter={kind}", dropout)
    train_adapter(make_cfg(*short, "trainer.save_every_steps=2"), tmp_path / "full")
    resumed = train_adapter(make_cfg(*short, f"resume_from={tmp_path / 'full' / 'checkpoints' / 'step-0000002'}"), tmp_path / "cut")
    assert len(resumed.step_seconds) == 2
    assert_same(adapter(tmp_path / "full"), adapter(tmp_path / "cut"))


def test_checkpoint_holds_lora_only_and_state(full_run):
    folder = full_run / "checkpoints" / "step-0000006"
    names = sorted(p.name for p in folder.iterdir())
    assert {"adapter_model.safetensors", "generators_0.safetensors", "trainer_state.json", "optimizer.bin"} <= set(names)
    assert not any(n.startswith("model") for n in names)  # the frozen base is never copied into a checkpoint
    state = ckpt.read_state(folder)["state"]
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (6, 1, 4)


def test_latest_skips_half_written_checkpoints_and_pruning_keeps_the_newest(make_cfg, tmp_path):
    train_adapter(make_cfg(*BASE, "trainer.save_every_steps=2", "trainer.keep_checkpoints=2"), tmp_path)
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path)] == ["step-0000008", "step-0000010"]
    broken = tmp_path / "checkpoints" / "step-0000012"
    broken.mkdir()
    (tmp_path / "checkpoints" / ".tmp-step-0000014").mkdir()
    assert ckpt.resolve("latest", tmp_path).name == "step-0000010"


def test_a_checkpoint_of_another_setup_is_refused_one_line_per_difference(full_run, make_cfg, tmp_path, caplog):
    checkpoint = full_run / "checkpoints" / "step-0000004"
    with pytest.raises(ckpt.CheckpointError) as err:
        train_adapter(make_cfg(*BASE, "adapter.rank=8", "trainer.seed=1", f"resume_from={checkpoint}"), tmp_path)
    lines = str(err.value).splitlines()
    assert lines[0].endswith("does not fit this run (resume.strict=false loads its LoRA weights only):")
    differences = sorted(line.split(":")[0].strip() for line in lines[1:])
    assert differences == ["adapter.alpha", "adapter.rank", "trainer.seed"]  # alpha follows the rank
    assert not (tmp_path / "adapter").exists()

    caplog.set_level("INFO")
    result = train_adapter(make_cfg(*BASE, "trainer.seed=1", f"resume_from={checkpoint}", "resume.strict=false"), tmp_path)
    assert "loaded 32 LoRA tensors" in caplog.text and result.steps == 10


def test_a_pickle_payload_in_a_checkpoint_never_runs(full_run, make_cfg, tmp_path):
    checkpoint = tmp_path / "step-0000004"
    shutil.copytree(full_run / "checkpoints" / "step-0000004", checkpoint)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    with open(checkpoint / "optimizer.bin", "wb") as f:
        torch.save({"state": Payload()}, f, pickle_module=pickle)
    with pytest.raises(ckpt.CheckpointError, match=r"optimizer.bin: contents changed since it was saved"):
        train_adapter(make_cfg(*BASE, f"resume_from={checkpoint}"), tmp_path / "run")
    state = json.loads((checkpoint / "trainer_state.json").read_text())  # as an older Side-Step wrote it: no digests
    del state["files"], state["digest"]
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))
    with pytest.raises(ckpt.CheckpointError, match=r"optimizer.bin: refused to load \(UnpicklingError: .*\); it is"):
        train_adapter(make_cfg(*BASE, f"resume_from={checkpoint}"), tmp_path / "run")
    assert not marker.exists()


@pytest.mark.parametrize("victim", ["random_states_0.pkl", "generators_0.safetensors", "adapter_model.safetensors",
                                    "trainer_state.json"])
def test_a_truncated_checkpoint_file_is_named(full_run, make_cfg, tmp_path, victim):
    checkpoint = tmp_path / "step-0000004"
    shutil.copytree(full_run / "checkpoints" / "step-0000004", checkpoint)
    data = (checkpoint / victim).read_bytes()
    (checkpoint / victim).write_bytes(data[: len(data) // 3])
    with pytest.raises(ckpt.CheckpointError, match=victim.replace(".", "[.]")):
        train_adapter(make_cfg(*BASE, f"resume_from={checkpoint}"), tmp_path / "run")


def test_non_finite_steps_stop_with_the_samples_or_are_skipped(make_cfg, tmp_path, monkeypatch):
    from sidestep.training import loop

    real = loop.flow_matching_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss, t = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] in (5, 6) else loss), t

    monkeypatch.setattr(loop, "flow_matching_loss", poisoned)
    with pytest.raises(SidestepError, match=r"non-finite loss or gradient at step 3 \(samples: sample_\d+.safetensors, "
                                            r"sample_\d+.safetensors\); last good checkpoint: none"):
        train_adapter(make_cfg(*BASE), tmp_path / "a")
    calls["n"] = 0
    result = train_adapter(make_cfg(*BASE, "trainer.on_nonfinite=skip"), tmp_path / "b")
    assert result.steps == 10 and torch.isfinite(torch.tensor(result.final_loss))
    assert all(torch.isfinite(t).all() for t in adapter(tmp_path / "b").values())


def test_out_of_memory_names_the_settings_and_what_to_try(make_cfg, tmp_path, monkeypatch):
    from sidestep.training import loop

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(loop, "flow_matching_loss", oom)
    with pytest.raises(SidestepError, match=r"out of GPU memory \(batch 1, crop 2.0 s.*vram= profile"):
        train_adapter(make_cfg(*BASE), tmp_path)


def test_sigterm_checkpoints_and_resume_latest_equals_the_uninterrupted_run(cli, tmp_path, cache_dir):
    args = ["experiment=demo", "trainer.max_steps=80", "trainer.save_every=1000", "ui.yes=true",
            f"data.synthetic.cache_dir={cache_dir}"]
    assert cli(*args, f"hydra.run.dir={tmp_path / 'full'}").returncode == 0
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "sidestep.train", *args, f"hydra.run.dir={cut}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    while proc.poll() is None and (read_status(cut) or {}).get("step", 0) < 10:  # some steps into training
        time.sleep(0.2)  # polling the run's own state, however slow the machine
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate()
    assert proc.returncode == 143, err[-2000:]
    assert "stopped by SIGTERM; checkpoint" in err and "resume_from=latest" in err
    assert len(ckpt.complete_checkpoints(cut)) == 1
    status = json.loads((cut / "status.json").read_text())  # written with the stop, not at the last log step
    newest = ckpt.complete_checkpoints(cut)[0]
    assert status["state"] == "stopped" and status["checkpoint"] == str(newest)
    assert status["step"] == ckpt.read_state(newest)["state"]["step"]
    resumed = cli(*args, f"hydra.run.dir={cut}", "resume_from=latest")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same(adapter(tmp_path / "full"), adapter(cut))


TRAIN = """
import sys
from tests.conftest import compose_cfg
from sidestep.train import train_adapter
train_adapter(compose_cfg(sys.argv[1], *sys.argv[3:]), __import__("pathlib").Path(sys.argv[2]))
"""

KILL_DURING_SECOND_CHECKPOINT = """
import os, signal, sys
from tests.conftest import compose_cfg
from sidestep.training import checkpoint
from sidestep.train import train_adapter
real, calls = checkpoint.save_safetensors, []
def dying_save(*args, **kwargs):
    calls.append(1)
    if len(calls) == 4:  # the second checkpoint: its LoRA file is written, then the process dies
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
checkpoint.save_safetensors = dying_save
train_adapter(compose_cfg(sys.argv[1], *sys.argv[3:]), __import__("pathlib").Path(sys.argv[2]))
"""


def test_sigkill_while_writing_a_checkpoint_leaves_the_previous_one_loadable(tmp_path, cache_dir):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SECOND_CHECKPOINT, str(cache_dir), str(run), *BASE,
                           "trainer.save_every_steps=3"], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [p.name for p in ckpt.complete_checkpoints(run)] == ["step-0000003"]
    assert (run / "checkpoints" / ".tmp-step-0000006").is_dir()
    # the resume and the reference each run in a fresh process too, as the killed run did: what earlier tests left
    # in this worker's process (compiled kernels, loaded libraries) then cannot tell the three apart
    for folder, extra in ((run, ("resume_from=latest",)), (tmp_path / "reference", ())):
        done = subprocess.run([sys.executable, "-c", TRAIN, str(cache_dir), str(folder), *BASE,
                               "trainer.save_every_steps=3", *extra], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.dirname(__file__)))
        assert done.returncode == 0, done.stderr[-2000:]
    assert ckpt.read_state(ckpt.complete_checkpoints(run)[-1])["state"]["step"] == 10
    assert_same(adapter(tmp_path / "reference"), adapter(run))


def test_first_signal_asks_to_stop_and_a_second_ctrl_c_stops_at_once(tmp_path):
    from sidestep.training.interrupts import StopRequest

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signum == signal.SIGTERM
        error = stop.interrupted(tmp_path, tmp_path / "checkpoints" / "step-0000007")
        assert error.exit_code == 143 and "resume_from=latest" in str(error) and f"hydra.run.dir={tmp_path}" in str(error)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # handlers restored


@pytest.mark.parametrize("schedule", ["scheduler=cosine_with_restarts scheduler.cycles=2 scheduler.eta_min=0.3",
                                      "scheduler=polynomial scheduler.power=3 scheduler.end_factor=0.2 "
                                      "scheduler.warmup_start_factor=0.5"])
def test_the_schedules_with_knobs_resume_to_the_uninterrupted_adapter(make_cfg, tmp_path, schedule):
    """Their multipliers' fields are in the checkpoint and checked against this run's before they load."""
    short = ("trainer.batch_size=2", "trainer.gradient_accumulation=1", "trainer.max_steps=5", "data.crop_seconds=2",
             "scheduler.warmup_steps=1", *schedule.split())
    train_adapter(make_cfg(*short, "trainer.save_every_steps=2"), tmp_path / "full")
    resumed = train_adapter(make_cfg(*short, f"resume_from={tmp_path / 'full' / 'checkpoints' / 'step-0000002'}"),
                            tmp_path / "cut")
    assert len(resumed.step_seconds) == 3
    assert_same(adapter(tmp_path / "full"), adapter(tmp_path / "cut"))
