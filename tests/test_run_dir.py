"""What a run wrote stays true: a refused start never rewrites the run's record or status, a fresh start never
mixes with an earlier run, one process trains in a folder at a time, and a bad sweep job is recorded as failed
while the other jobs run."""

import errno
import json

import pytest
from filelock import FileLock
from omegaconf import OmegaConf

from sidestep.errors import SidestepError, first_line, plain
from sidestep.run_status import read_status
from sidestep.train import train_adapter
from sidestep.training import checkpoint as ckpt
from sidestep.training.run_dir import LOCK_FILE
from tests.test_sweeps import same_adapter

QUICK = ("experiment=demo", "trainer.max_steps=2", "sample.every_n_epochs=null", "ui.yes=true", "ui.plain=true")


def record(run):
    return {name: (run / ".hydra" / name).read_text() for name in ("config.yaml", "overrides.yaml")}


def test_refused_starts_keep_the_record_and_a_real_resume_appends_to_its_history(cli, tmp_path, cache_dir):
    run = tmp_path / "run"
    args = (*QUICK, f"data.synthetic.cache_dir={cache_dir}", f"hydra.run.dir={run}")
    assert cli(*args).returncode == 0
    before, status = record(run), read_status(run)
    for refused in (["adapter.rank=8", "resume_from=latest"], ["trainer.max_steps=3"]):  # other setup; fresh start
        proc = cli(*args, *refused)
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
        assert record(run) == before and read_status(run) == status
        assert not list((run / ".hydra").glob("attempt-*")), "a refused attempt left its folder"
    assert "already holds a run" in proc.stderr and "resume_from=latest" in proc.stderr

    assert cli(*args, "trainer.max_steps=4", "resume_from=latest").returncode == 0
    assert OmegaConf.load(run / ".hydra" / "config.yaml").trainer.max_steps == 4  # what trained last
    history = OmegaConf.to_container(OmegaConf.load(run / ".hydra" / "history.yaml"))
    assert [h["resumed_from"] for h in history] == [None, str(run / "checkpoints" / "step-0000002")]
    assert "trainer.max_steps=2" in history[0]["overrides"] and "trainer.max_steps=4" in history[1]["overrides"]
    again = cli(str(run), f"hydra.run.dir={tmp_path / 'again'}", app="rerun")  # afresh, the whole 4 steps
    assert again.returncode == 0, again.stderr[-2000:]
    assert same_adapter(run, tmp_path / "again")


def test_a_fresh_start_into_an_earlier_run_or_from_another_runs_checkpoint_is_refused(make_cfg, tmp_path):
    train_adapter(make_cfg("trainer.max_steps=2"), tmp_path / "a")
    for run_dir, extra in ((tmp_path / "a", ()), (tmp_path / "a", (f"resume_from={tmp_path / 'b' / 'x'}",))):
        with pytest.raises(SidestepError, match="already holds a run .*checkpoints, adapter"):
            train_adapter(make_cfg("trainer.max_steps=2", *extra), run_dir)
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path / "a")] == ["step-0000002"]


def test_two_processes_never_train_in_one_folder(make_cfg, tmp_path):
    tmp_path.mkdir(exist_ok=True)
    with FileLock(str(tmp_path / LOCK_FILE)):  # as another process training there holds it
        with pytest.raises(SidestepError, match="another Side-Step process is training in this folder"):
            train_adapter(make_cfg("trainer.max_steps=2"), tmp_path)
    assert read_status(tmp_path) is None
    assert train_adapter(make_cfg("trainer.max_steps=2"), tmp_path).steps == 2  # free again once it is released


def test_a_full_disk_marks_the_run_failed_with_the_reason(make_cfg, tmp_path, monkeypatch):
    from sidestep.training import loop

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "checkpoints"))

    monkeypatch.setattr(loop.ckpt, "save_checkpoint", full_disk)
    with pytest.raises(OSError):
        train_adapter(make_cfg("trainer.max_steps=2"), tmp_path)
    status = read_status(tmp_path)
    assert status["state"] == "failed" and "No space left on device" in status["error"]


@pytest.mark.parametrize("error, line", [
    (OSError(errno.ENOSPC, "No space left on device", "/runs/x/adapter"),
     "error: cannot write /runs/x/adapter: No space left on device; free some disk space or train into another folder"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/run"),
     "error: cannot write /mnt/ro/run: Read-only file system; train into a folder you may write (hydra.run.dir=...)"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/proc/run"),
     "error: cannot reach /proc/run: No such file or directory; check the path (hydra.run.dir=...)"),
    (SidestepError("\x1b[1mbold\x1b[0m and a very long line " + "word " * 60 + "end"), "error: bold and a very long"),
])
def test_entry_points_print_failures_as_one_whole_plain_line(capsys, error, line):
    from sidestep.ui.app import run_app

    def app():
        raise error

    with pytest.raises(SystemExit) as code:
        run_app(app)
    out = capsys.readouterr().err
    assert code.value.code == 2 and out.startswith(line) and len(out.splitlines()) == 1 and "\x1b" not in out
    assert out.rstrip().endswith(("end", "hydra.run.dir=...)"))  # never cut


def test_first_line_is_whole_and_plain():
    err = RuntimeError("\n  Weights only load failed. \x1b[1mdo those steps only if you trust it\x1b[0m. " + "x" * 300
                       + "\nsecond line")
    assert first_line(err) == "Weights only load failed. do those steps only if you trust it. " + "x" * 300
    assert plain("a\x1b]0;title\x07b\x07c\td\n") == "abc\td\n"


def test_a_bad_sweep_job_is_recorded_failed_and_the_sweep_goes_on(cli, tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    proc = cli("-m", *QUICK, f"data.synthetic.cache_dir={cache_dir}", f"hydra.sweep.dir={sweep}", "adapter.rank=4,0,8")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert [(sweep / str(j) / "adapter" / "adapter_model.safetensors").is_file() for j in range(3)] == [True, False, True]
    status = read_status(sweep / "1")
    assert status["state"] == "failed" and status["error"] == "adapter.rank: must be at least 1 (got 0)"
    assert proc.stderr.splitlines()[-2:] == [
        f"sweep {sweep} finished with 1 failed job(s); the others ran:",
        "  1 (experiment=demo trainer.max_steps=2 sample.every_n_epochs=null "
        f"data.synthetic.cache_dir={cache_dir} adapter.rank=0): adapter.rank: must be at least 1 (got 0)"]
    assert "Traceback" not in proc.stderr and [read_status(sweep / j)["state"] for j in "02"] == ["finished"] * 2
    assert json.loads((sweep / "1" / "status.json").read_text())["step"] == 0
