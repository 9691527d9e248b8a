"""The GPU fast paths, checked where they can be on the CPU: the attention kernel chosen, compiled blocks that
train like eager ones, batches of whole songs without padded frames, and one host sync per optimizer step."""

import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sidestep.config.overrides import check_overrides
from sidestep.data.collate import CropCollate
from sidestep.data.sampler import EpochSampler
from sidestep.errors import ConfigError
from sidestep.train import train_adapter
from sidestep.training import fast_paths
from tests.test_resume import assert_same

LENGTHS = [40, 44, 52, 60, 64, 70, 80, 90, 96, 100, 42, 58]  # latent frames: 1.6 to 4 s songs

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(scope="module")
def mixed_songs(tmp_path_factory):
    """A dataset of whole songs of different lengths, in the tiny DiT's layout."""
    folder = tmp_path_factory.mktemp("mixed")
    gen = torch.Generator().manual_seed(0)
    for i, frames in enumerate(LENGTHS):
        torch.save({"target_latents": torch.randn(frames, 64, generator=gen), "attention_mask": torch.ones(frames),
                    "encoder_hidden_states": torch.randn(8, 64, generator=gen),
                    "encoder_attention_mask": torch.ones(8, dtype=torch.bool),
                    "context_latents": torch.randn(frames, 128, generator=gen)}, folder / f"song_{i:02d}.pt")
    return folder


def test_auto_attention_takes_the_fastest_installed_kernel_that_can_train(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert fast_paths.attention_backend("auto", cpu, torch.float32) == "native"
    monkeypatch.setattr(fast_paths, "installed_backends",
                        lambda: {"flash": True, "_flash_3": True, "flex": True, "xformers": False})
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 9))
    assert fast_paths.attention_backend("auto", cuda, torch.bfloat16) == "flash"
    assert fast_paths.attention_backend("auto", cuda, torch.float32) == "native"  # flash kernels take half precision
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert fast_paths.attention_backend("auto", cuda, torch.bfloat16) == "_flash_3"
    assert fast_paths.attention_backend("auto", cpu, torch.bfloat16) == "native"
    with pytest.raises(ConfigError, match="trainer.attention_backend=xformers: its package is not installed"):
        fast_paths.attention_backend("xformers", cuda, torch.bfloat16)


@pytest.mark.parametrize("backend", ["sage", "flash_hub", "fast"])
def test_backends_that_cannot_train_or_would_download_are_refused(backend):
    with pytest.raises(ConfigError, match=f"^trainer.attention_backend: '{backend}' is not one of auto, native.*"
                                          "SageAttention has no backward pass"):
        check_overrides([f"trainer.attention_backend={backend}"], CONF)


def test_a_native_run_shows_its_kernels_and_an_explicit_backend_trains(make_cfg, tmp_path):
    plan = {}
    from sidestep.ui import summary

    real = summary.show
    summary.show = lambda p: plan.update(kernels=p.kernels) or real(p)
    try:
        train_adapter(make_cfg("trainer.max_steps=2"), tmp_path / "auto")
        train_adapter(make_cfg("trainer.max_steps=2", "trainer.attention_backend=_native_math"), tmp_path / "math")
    finally:
        summary.show = real
    assert plan["kernels"] == "attention _native_math, torch.compile off"
    a, b = (load_file(tmp_path / d / "adapter" / "adapter_model.safetensors") for d in ("auto", "math"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)  # the same attention, another kernel


@pytest.mark.parametrize("mode", ["blocks", "full"])
def test_compiled_blocks_train_like_eager_ones(make_cfg, tmp_path, mode):
    steps = ("trainer.max_steps=3", "adapter.dropout=0.1", "trainer.gradient_checkpointing=true")
    eager = train_adapter(make_cfg(*steps), tmp_path / "eager")
    compiled = train_adapter(make_cfg(*steps, f"trainer.compile={mode}", "trainer.compile_backend=aot_eager"), tmp_path / mode)
    assert abs(compiled.final_loss - eager.final_loss) < 1e-4
    a, b = (load_file(tmp_path / d / "adapter" / "adapter_model.safetensors") for d in ("eager", mode))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_compile_false_on_the_command_line_means_off(make_cfg):
    assert make_cfg("trainer.compile=false").trainer.compile == "false"
    with pytest.raises(ConfigError, match="trainer.compile: must be false, blocks or full"):
        make_cfg("trainer.compile=yes")


def batches_of(lengths, batch_size, epoch, bucket=True):
    sampler = EpochSampler(len(lengths), seed=5, lengths=lengths if bucket else None, batch_size=batch_size)
    sampler.set_epoch(epoch)
    order = [i for _, i in sampler]
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def test_bucketed_batches_of_whole_songs_have_no_padded_frame_and_see_every_song_once():
    collate = CropCollate(seed=0, crop_frames=None, patch_size=2, shortest=True)
    padded = {True: 0, False: 0}
    for epoch in range(3):
        batches = batches_of(LENGTHS, 4, epoch)
        assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))  # once per epoch
        for batch in batches:
            items = [{"target_latents": torch.zeros(LENGTHS[i], 64), "context_latents": torch.zeros(LENGTHS[i], 128),
                      "attention_mask": torch.ones(LENGTHS[i]), "encoder_hidden_states": torch.zeros(8, 64),
                      "encoder_attention_mask": torch.ones(8, dtype=torch.bool), "epoch": epoch, "index": i,
                      "name": str(i)} for i in batch]
            padded[True] += int((collate(items)["attention_mask"] == 0).sum())
            padded[False] += int((CropCollate(0, None, 2)(items)["attention_mask"] == 0).sum())
    assert padded[True] == 0 and padded[False] > 0
    assert batches_of(LENGTHS, 4, 0) != batches_of(LENGTHS, 4, 1)  # still shuffled per epoch
    spread = [max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) for b in batches_of(LENGTHS, 4, 0)]
    plain = [max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) for b in batches_of(LENGTHS, 4, 0, bucket=False)]
    assert sum(spread) < sum(plain)  # similar lengths together: little is cut away


def test_a_bucketed_run_resumes_exactly(make_cfg, tmp_path, mixed_songs):
    data = ("data=tensors", f"data.dataset_dir={mixed_songs}", "trainer.batch_size=4", "trainer.max_steps=6",
            "trainer.save_every_steps=2", "trainer.keep_checkpoints=5")
    train_adapter(make_cfg(*data), tmp_path / "full")
    train_adapter(make_cfg(*data, f"resume_from={tmp_path / 'full' / 'checkpoints' / 'step-0000004'}"), tmp_path / "cut")
    assert_same(load_file(tmp_path / "full" / "adapter" / "adapter_model.safetensors"),
                load_file(tmp_path / "cut" / "adapter" / "adapter_model.safetensors"))


def test_one_host_sync_per_optimizer_step(make_cfg, tmp_path, monkeypatch):
    """What CUDA's sync debug mode would flag, counted on the CPU: each place the training code (not the data
    workers, whose tensors live on the host) reads a tensor's value into Python. Steps of 4- and 10-step runs
    differ by 6 optimizer steps, so start-up and the end of the run cancel out."""
    reads = {"n": 0}
    step_code = (os.sep.join(("sidestep", "training", "")), os.sep.join(("sidestep", "models", "")))
    for name in ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__"):
        real = getattr(torch.Tensor, name)

        def counted(self, *args, _real=real, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            reads["n"] += any(part in caller for part in step_code)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    quiet = ("trainer.log_every=1000", "trainer.log_heavy_every=1000", "trainer.save_every=1000")
    counts = []
    for steps in (4, 10):
        reads["n"] = 0
        train_adapter(make_cfg(*quiet, f"trainer.max_steps={steps}"), tmp_path / str(steps))
        counts.append(reads["n"])
    assert (counts[1] - counts[0]) / 6 == 1.0, counts


@pytest.mark.parametrize("size, batch_size", [(70, 4), (101, 3), (33, 2)])
def test_a_bucketed_epoch_holds_every_song_exactly_once(size, batch_size):
    """Several sort windows, the last one ending in a short batch: none is dropped, none repeated."""
    lengths = [40 + (i * 37) % 61 for i in range(size)]
    for epoch in range(2):
        batches = batches_of(lengths, batch_size, epoch)
        assert sorted(i for b in batches for i in b) == list(range(size))
        assert [len(b) for b in batches[:-1]] == [batch_size] * (len(batches) - 1)  # the short one comes last
