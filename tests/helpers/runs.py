"""Run folders: their adapters compared, and run folders laid out as training, sweeps and `sidestep.sample` leave
them (for the report, without training)."""

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from sidestep.data.audio import write_wav

# The resume tests' setup: 8 samples, batch 1, accumulation 2: 4 optimizer steps per epoch; dropout on, so the
# global RNG matters too.
BASE = ("trainer.batch_size=1", "trainer.gradient_accumulation=2", "trainer.max_steps=10", "adapter.dropout=0.1",
        "data.crop_seconds=2")


def adapter(run_dir):
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def same_adapter(a, b):
    x = load_file(a / "adapter" / "adapter_model.safetensors")
    y = load_file(b / "adapter" / "adapter_model.safetensors")
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def make_run(run: Path, overrides, job: str = "train", status=None, losses=(), held_out=(), noise=None) -> Path:
    """A run dir as Hydra and training leave it: .hydra/, status.json, TensorBoard scalars."""
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save({"trainer": {"seed": 42}, "lora": {"rank": 4}}, run / ".hydra" / "config.yaml")
    OmegaConf.save(list(overrides), run / ".hydra" / "overrides.yaml")
    OmegaConf.save({"hydra": {"job": {"name": job}}}, run / ".hydra" / "hydra.yaml")
    if status:
        (run / "status.json").write_text(json.dumps(status))
    if losses or held_out:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run / "tb"))
        for step, value in enumerate(losses, 1):
            writer.add_scalar("loss/smoothed", value, step)
        for step, value in enumerate(held_out, 1):
            writer.add_scalar("loss/val", value, step)
            if noise is not None:
                writer.add_scalar("loss/val_noise", noise, step)
        writer.close()
    return run


def make_sample(folder: Path, name: str, info: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_wav(folder / f"{name}.wav", 0.1 * torch.randn(2, 4800, generator=torch.Generator().manual_seed(0)))
    (folder / f"{name}.json").write_text(json.dumps({"prompt": "warm lofi piano", "lyrics": "[Instrumental]",
                                                     "seed": 0, "duration": 0.1, **info}))
