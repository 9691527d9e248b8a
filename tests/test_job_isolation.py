"""A sweep's jobs run one after another in one process: each job's process-wide settings (Accelerate's precision,
diffusers' attention backend, the random generators) come from its own config, never from the job before it."""

import sys

from diffusers.models.attention_dispatch import AttentionBackendName
from diffusers.models.attention_dispatch import _AttentionBackendRegistry as attention_registry

from sidestep.run_status import read_status
from sidestep.train import main
from sidestep.ui.app import run_app
from tests.helpers.runs import same_adapter


def test_jobs_of_one_sweep_in_one_process_each_run_with_their_own_settings(tmp_path, cache_dir, monkeypatch,
                                                                           hydra_restored):
    sweep = tmp_path / "sweep"
    monkeypatch.setattr(sys, "argv", [
        "train", "-m", "experiment=demo", "trainer.precision=fp32,bf16,fp32", "trainer.max_steps=2", "sample.every_n_epochs=null",
        "ui.yes=true", "ui.plain=true", f"data.synthetic.cache_dir={cache_dir}", f"hydra.sweep.dir={sweep}"])
    # What a FlexAttention job leaves behind in diffusers (it has no backward on the CPU: a job inheriting it fails).
    monkeypatch.setattr(attention_registry, "_active_backend", AttentionBackendName.FLEX)
    run_app(main, check_schema=True)
    assert [read_status(sweep / job)["state"] for job in "012"] == ["finished"] * 3
    assert same_adapter(sweep / "0", sweep / "2")  # the bf16 job between them changed nothing for the third
    assert not same_adapter(sweep / "0", sweep / "1")
    assert attention_registry._active_backend == AttentionBackendName.FLEX  # what it was before the sweep
