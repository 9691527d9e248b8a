"""Shared fixtures: configs composed exactly as the command line composes them, on the tiny model."""

import logging
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from sidestep.config import register_schemas
from tests.helpers.browser import browser  # noqa: F401  (the module-scoped Chromium fixture)
from tests.helpers.configs import ROOT, compose_cfg  # noqa: F401  (ROOT: for tests that read the tree)
from tests.helpers.models import dit_outputs, randomize_lora  # noqa: F401
from tests.helpers.processes import run_module

os.environ.setdefault("SIDESTEP_CONFIG_DIR", tempfile.mkdtemp(prefix="sidestep-config-"))  # never the user's own
register_schemas()


@pytest.fixture
def hydra_restored():
    """Hydra sets up the root logger for its jobs and stays initialised; the tests after this one get both back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """Synthetic datasets are generated once per test session, outside the user's cache."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def make_cfg(cache_dir):
    """`make_cfg("adapter.rank=4")` -> the checked config `python -m sidestep.train experiment=demo adapter.rank=4` uses."""

    def make(*overrides: str, experiment: str = "demo", check: bool = True) -> DictConfig:
        return compose_cfg(cache_dir, *overrides, experiment=experiment, check=check)

    return make


@pytest.fixture
def cli(tmp_path, cache_dir):
    """Run `python -m sidestep.<app> ...` in a fresh process (forked with torch already imported, see
    `helpers/processes.py`), in `tmp_path`; returns the CompletedProcess."""

    def run(*args: str, app: str = "train") -> subprocess.CompletedProcess:
        """Waits for the command to end, however long a busy machine makes it take (no wall-clock limit)."""
        return run_module(f"sidestep.{app}", *args, cwd=tmp_path)

    return run
