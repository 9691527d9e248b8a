"""Shared fixtures: configs composed exactly as the command line composes them, on the tiny model."""

import sys
from pathlib import Path
from typing import List

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from sidestep.config import prepare, register_schemas

ROOT = Path(__file__).resolve().parents[1]
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
            base.append(f"data.synthetic.cache_dir={cache_dir}")
        cfg = compose(config_name="train", overrides=base + list(overrides))
    return prepare(cfg) if check else cfg


@pytest.fixture
def make_cfg(cache_dir):
    """`make_cfg("lora.rank=4")` -> the checked config `python -m sidestep.train experiment=demo lora.rank=4` uses."""

    def make(*overrides: str, experiment: str = "demo", check: bool = True) -> DictConfig:
        return compose_cfg(cache_dir, *overrides, experiment=experiment, check=check)

    return make


@pytest.fixture
def cli(tmp_path, cache_dir):
    """Run `python -m sidestep.<app> ...` in a subprocess; returns the CompletedProcess."""
    import subprocess

    def run(*args: str, app: str = "train", timeout: int = 300) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", f"sidestep.{app}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)

    return run
