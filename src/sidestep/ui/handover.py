"""Handing the terminal over to another command: `sidestep.train` offering the wizard, the wizard starting training."""

import os
import sys
from typing import List, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.prompt import Confirm

from sidestep.config.data_sources import data_schema
from sidestep.ui.console import console, is_interactive


def offer_wizard(cfg: DictConfig) -> None:
    """`python -m sidestep.train` with no dataset, someone at the terminal: offer the wizard, seeded with the same
    overrides, instead of only failing. Otherwise (piped, `ui.yes`, a sweep) nothing changes."""
    data_given = data_schema(cfg.data).generated or any(
        OmegaConf.select(cfg, f"data.{key}") is not None for key in data_schema(cfg.data).paths(cfg.data))
    if data_given or OmegaConf.select(cfg, "preprocess.audio_dir") is not None or cfg.ui.yes or not is_interactive():
        return
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.RUN:
        return
    if Confirm.ask("No data.dataset_dir given. Set up the run with the wizard?", default=True, console=console):
        become(["-m", "sidestep.wizard", *[o for o in hydra_cfg.overrides.task if not o.startswith("hydra.")]])


def become(args: List[str]) -> NoReturn:
    """Replace this process with `python ARGS`, so nothing of it (a CUDA context, say) lingers while training runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *args])
