"""What a new user met on a first day (issue 20's papercuts), each pinned: alpha that follows the rank, a warm-up
longer than the run, samples longer than the songs, too many loader workers, Prodigy's hidden step size, no way to
get a checkpoints folder without downloading one. (Reruns that forget how the run ran: test_sweeps; report
folders and wall seconds: test_report.)"""

import logging
import re
import warnings
from pathlib import Path

import soundfile
import torch

from sidestep.data.loader import make_loader
from sidestep.models.checkpoints import find_variants
from sidestep.train import train_adapter
from sidestep.training.live_samples import sample_duration
from sidestep.training.tensorboard import applied_lr

ROOT = Path(__file__).resolve().parents[1]


def test_alpha_follows_the_rank_unless_given(make_cfg):
    assert [make_cfg(f"adapter.rank={r}").adapter.alpha for r in (4, 8)] == [8, 16]  # a rank sweep keeps alpha / rank
    assert make_cfg("vram=8gb", "adapter.rank=4").adapter.alpha == 8  # presets set a rank, not a fixed alpha
    assert make_cfg("adapter.rank=8", "adapter.alpha=5").adapter.alpha == 5
    assert make_cfg("adapter.rank=8", "adapter.alpha_ratio=1").adapter.alpha == 8


def test_a_short_run_warns_about_its_warm_up_and_samples_as_long_as_its_songs(make_cfg, tmp_path, caplog, monkeypatch):
    from sidestep.ui import summary

    plans = []
    monkeypatch.setattr(summary, "show", plans.append)  # the summary's values, whatever the terminal's width
    with caplog.at_level(logging.WARNING):
        train_adapter(make_cfg("trainer.max_steps=2", "sample.every_n_steps=2", "data.synthetic.seconds=1.2"), tmp_path)
    assert "scheduler.warmup_steps=20 covers the whole run of 2 optimizer steps" in caplog.text  # demo: 20 warm-up
    assert re.fullmatch(r"2 prompts x 1.2 s at step 2: about \d+% on top of training's DiT work",
                        plans[0].sampling)
    wavs = sorted((tmp_path / "samples").rglob("*.wav"))
    assert len(wavs) == 2 and all(soundfile.info(str(w)).duration == 1.2 for w in wavs)


def test_the_default_sample_length_is_capped_and_an_explicit_one_wins(make_cfg):
    minute = [25 * 60] * 3  # latent frames of three one-minute songs
    assert sample_duration(make_cfg().sample.duration, minute) == 30.0
    assert sample_duration(make_cfg("sample.duration=7").sample.duration, minute) == 7.0


class EightSamples(list):
    """Stands in for a dataset of eight samples, each seen once an epoch, with no lengths (the crop sets them)."""

    repeats = [1] * 8


def test_data_loader_workers_follow_the_cores(make_cfg, monkeypatch):
    cfg = make_cfg("data.num_workers=null", "data.crop_seconds=2")
    samples = EightSamples(range(8))
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    loader, _ = make_loader(cfg, samples, "cpu")
    assert loader.num_workers == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PyTorch's "will create 4 worker processes ... suggested max is 2"
        loader.check_worker_number_rationality()
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(32)), raising=False)
    assert make_loader(cfg, samples, "cpu")[0].num_workers == 4
    assert make_loader(make_cfg("data.num_workers=3", "data.crop_seconds=2"), samples, "cpu")[0].num_workers == 3


def test_prodigy_shows_its_real_step_size(make_cfg, tmp_path, caplog):
    from prodigyopt import Prodigy

    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = Prodigy([weight], lr=1.0)
    weight.sum().backward()
    optimizer.step()
    group = optimizer.param_groups[0]
    assert applied_lr(optimizer) == group["d"] * group["lr"] != group["lr"]

    with caplog.at_level(logging.INFO):
        train_adapter(make_cfg("optimizer=prodigy", "trainer.max_steps=2", "trainer.log_every=2"), tmp_path)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next(tmp_path.rglob("*tfevents*")).parent)).Reload()
    logged = events.Scalars("lr")[-1].value
    assert 0 < logged < 1e-2  # d x lr, not Prodigy's multiplier of 1.0
    assert f"lr {logged:.2e}" in next(r.getMessage() for r in caplog.records if r.getMessage().startswith("step 2/2"))


def test_the_readme_writes_a_tiny_checkpoints_folder_in_one_line(tmp_path):
    from sidestep.tiny import main

    line = next(s for s in (ROOT / "README.md").read_text().splitlines() if "sidestep.tiny " in s)
    args = line.split("#")[0].split("sidestep.tiny", 1)[1].split()
    main([str(tmp_path / a) if not a.startswith("-") else a for a in args])
    root = tmp_path / args[0]
    assert list(find_variants(root)) == ["turbo"]
    assert {"model.safetensors", "silence_latent.pt", "config.json"} <= {p.name for p in (root / "acestep-v15-turbo").iterdir()}
    assert (root / "vae" / "config.json").is_file() and (root / "Qwen3-Embedding-0.6B" / "tokenizer.json").is_file()
