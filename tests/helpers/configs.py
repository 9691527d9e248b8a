"""Configs composed exactly as the command line composes them, on the tiny model."""

from pathlib import Path
from typing import List

from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from sidestep.config import checked_train_config

ROOT = Path(__file__).resolve().parents[2]


def compose_cfg(cache_dir, *overrides: str, experiment: str = "demo", check: bool = True) -> DictConfig:
    """The checked config `python -m sidestep.train experiment=demo <overrides>` uses."""
    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        base: List[str] = [f"experiment={experiment}", "ui.yes=true"] if experiment else []
        if experiment == "demo":
            base += ["sample.every_n_epochs=null"]  # test_sample listens
            base += [] if "data=tensors" in overrides else [f"data.synthetic.cache_dir={cache_dir}"]
        cfg = compose(config_name="train", overrides=base + list(overrides))
    return checked_train_config(cfg) if check else cfg
