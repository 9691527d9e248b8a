"""Shared fixtures: configs composed exactly as the command line composes them, on the tiny model."""

import os
import sys
import tempfile
from pathlib import Path
from typing import List

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from sidestep.config import prepare, register_schemas

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SIDESTEP_CONFIG_DIR", tempfile.mkdtemp(prefix="sidestep-config-"))  # never the user's own
register_schemas()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """Synthetic datasets are generated once per test session, outside the user's cache."""
    return tmp_path_factory.mktemp("cache")


def compose_cfg(cache_dir, *overrides: str, experiment: str = "demo", check: bool = True) -> DictConfig:
    """The checked config `python -m sidestep.train experiment=demo <overrides>` uses."""
    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        base: List[str] = [f"experiment={experiment}", "ui.yes=true"] if experiment else []
        if experiment == "demo":
            base += ["sample.every_n_epochs=null"]  # test_sample listens
            base += [] if "data=tensors" in overrides else [f"data.synthetic.cache_dir={cache_dir}"]
        cfg = compose(config_name="train", overrides=base + list(overrides))
    return prepare(cfg) if check else cfg


@pytest.fixture
def make_cfg(cache_dir):
    """`make_cfg("adapter.rank=4")` -> the checked config `python -m sidestep.train experiment=demo adapter.rank=4` uses."""

    def make(*overrides: str, experiment: str = "demo", check: bool = True) -> DictConfig:
        return compose_cfg(cache_dir, *overrides, experiment=experiment, check=check)

    return make


@pytest.fixture
def cli(tmp_path, cache_dir):
    """Run `python -m sidestep.<app> ...` in a subprocess; returns the CompletedProcess."""
    import subprocess

    def run(*args: str, app: str = "train") -> subprocess.CompletedProcess:
        """Waits for the command to end, however long a busy machine makes it take (no wall-clock limit)."""
        cmd = [sys.executable, "-m", f"sidestep.{app}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)

    return run


def dit_outputs(model: torch.nn.Module, seed: int = 0) -> torch.Tensor:
    """The DiT's prediction for a fixed random batch of two (tiny-model widths), for comparing models."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 12, 64, generator=gen)
    enc = torch.randn(2, 5, 64, generator=gen)
    ctx = torch.randn(2, 12, 128, generator=gen)
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        return model(hidden_states=x, timestep=t, timestep_r=t, encoder_hidden_states=enc, context_latents=ctx,
                     return_dict=False)[0]


def randomize_lora(transformer: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """LoRA weights far from their zero-effect start, as if trained; returns the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    for param in transformer.parameters():
        if param.requires_grad:
            param.data = torch.randn(param.shape, generator=gen) * 0.1
    return transformer.eval()
