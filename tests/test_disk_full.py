"""A disk that fills up (or turns read-only) during a run: whatever was writing (checkpoint tensors, optimizer state,
trainer state, adapter, samples, a step's adapter, report, status), the run ends with one line naming the file and what to do, a
`failed` status, the previous checkpoint intact and no temporary leftovers."""

import errno
import pathlib

import pytest
import torch

from sidestep.run_status import read_status, write_status
from sidestep.sweep_outcome import record_failure
from sidestep.train import train_adapter
from sidestep.training import checkpoint as ckpt
from sidestep.training.checkpoint_check import verify
from sidestep.write_errors import describe

RUN = ("trainer.max_steps=4", "trainer.save_every_steps=2", "trainer.log_every=2")
SAMPLES = ("sample.every_n_steps=4", "sample.count=1", "sample.duration=1", "sample.steps=2")
FULL = OSError(errno.ENOSPC, "No space left on device")


def full_from(original, when, error=FULL):
    """A writer that fails like a full disk once `when(path, data)` says so (Path.write_*(path, data),
    torch.save(data, path)); safetensors files are written as bytes (`atomic.save_safetensors`)."""

    def write(*args, **kwargs):
        path, data = (args[0], args[1]) if isinstance(args[0], pathlib.Path) else (args[1], args[0])
        if when(str(path), data):
            raise error
        return original(*args, **kwargs)

    return write


SITES = {
    "checkpoint tensors": ("write_bytes", lambda p, _: "step-0000004" in p and "adapter_model.safetensors" in p,
                           FULL),
    "optimizer state": ("torch.save", lambda p, _: "step-0000004" in p and "optimizer" in p,
                        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4288 vs 4176")),
    "trainer state": ("write_text", lambda p, _: "step-0000004" in p and p.endswith("trainer_state.json"), FULL),
    "adapter": ("write_bytes", lambda p, _: "/adapter/" in p or "/.adapter.tmp-" in p, FULL),
    "samples": ("write_bytes", lambda p, _: ".wav" in p, FULL),
    "step adapter": ("write_bytes", lambda p, _: "/adapters/" in p, FULL),
    "report": ("write_text", lambda p, _: "report.html" in p, FULL),
    "status": ("write_text", lambda p, data: "status.json" in p and '"step": 4' in data, FULL),
    "adapter, read-only": ("write_bytes", lambda p, _: "/adapter/" in p or "/.adapter.tmp-" in p,
                           OSError(errno.EROFS, "Read-only file system")),
}
ADVICE = {errno.ENOSPC: "No space left on device; free some disk space or train into another folder",
          errno.EROFS: "Read-only file system; train into a folder you may write"}


@pytest.mark.parametrize("site", SITES)
def test_a_full_disk_at_any_write_fails_the_run_with_one_line_and_keeps_the_last_checkpoint(make_cfg, tmp_path,
                                                                                            monkeypatch, site):
    writer, when, error = SITES[site]
    if writer == "torch.save":
        monkeypatch.setattr(torch, "save", full_from(torch.save, when, error))
    else:
        monkeypatch.setattr(pathlib.Path, writer, full_from(getattr(pathlib.Path, writer), when, error))
    run = tmp_path / "run"
    with pytest.raises(OSError) as failure:
        train_adapter(make_cfg(*RUN, *(SAMPLES if site in ("samples", "step adapter") else ())), run)

    err = failure.value
    assert err.errno == getattr(error, "errno", errno.ENOSPC) and str(run) in err.filename, err
    line = describe(err)
    assert line == f"cannot write {err.filename}: {ADVICE[err.errno]} (hydra.run.dir=...)"
    assert record_failure(run, err, owns_status=True) == line  # what `python -m sidestep.train` does with it
    assert read_status(run)["state"] == "failed" and read_status(run)["error"] == line
    kept = ckpt.complete_checkpoints(run)
    assert kept[0].name == "step-0000002"
    for checkpoint in kept:
        verify(checkpoint)
    assert not [p for p in run.rglob("*") if ".tmp" in p.name or ".old-" in p.name]


def test_the_last_status_reaches_a_disk_too_full_for_a_temporary_copy(tmp_path, monkeypatch):
    write_status(tmp_path, {"state": "running", "step": 3})
    monkeypatch.setattr(pathlib.Path, "write_text", full_from(pathlib.Path.write_text, lambda p, _: True))
    with pytest.raises(OSError, match="No space left"):
        write_status(tmp_path, {"state": "running", "step": 4})
    assert read_status(tmp_path) == {"state": "running", "step": 3}
    write_status(tmp_path, {"state": "failed", "step": 3, "error": "cannot write x"}, last=True)
    assert read_status(tmp_path) == {"state": "failed", "step": 3, "error": "cannot write x"}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
