"""A run's `.hydra/config.yaml`: the resolved config, plus what Hydra needs to rerun it the way the run ran.

`python -m sidestep.train --config-path RUN/.hydra --config-name config` loads this file as its primary config,
without the app's `train.yaml`, so on its own it would lose the app's run-dir pattern and log format. The file
therefore also carries the app's `hydra:` settings (run and sweep dirs, no chdir) and picks its log format
(`hydra/job_logging: sidestep`, found through `hydra.searchpath`). Readers of the values take them without those
two keys (`load_saved`); Hydra removes them itself before a rerun's config reaches the trainer.

A run folder may come from someone else, so its record is read as data: vetted before any value is read
(`trust.vet_file`), and Hydra's `hydra.yaml` only as plain text (`read_plain`), never resolved.
"""

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import sidestep.conf
from sidestep.config.renamed_keys import renamed_config
from sidestep.config.trust import vet_file
from sidestep.config.yaml_data import load_yaml_data
from sidestep.errors import ConfigError

APP_CONFIG = Path(sidestep.conf.__file__).parent / "train.yaml"
RERUN_KEYS = ("defaults", "hydra")


def saved_text(resolved: dict) -> str:
    """YAML of the resolved config with the app's Hydra settings, their interpolations (`${now:...}`) kept."""
    app = OmegaConf.load(APP_CONFIG).hydra
    rerun = {"defaults": [{"override hydra/job_logging": "sidestep"}, "_self_"],
             "hydra": {"searchpath": ["pkg://sidestep.conf"], "run": app.run, "sweep": app.sweep, "job": app.job}}
    return OmegaConf.to_yaml(OmegaConf.create({**rerun, **resolved}))


def load_saved(path: Path) -> DictConfig:
    """The run's config values in today's key names, without what only a Hydra rerun needs; refused (`ConfigError`)
    if the record holds what a saved config never does (a `_target_` Side-Step did not ship, an interpolation)."""
    cfg = load_yaml_data(path, record=True)
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: a saved config is a mapping of settings, this file is not")
    cfg = renamed_config(cfg)  # old names to today's (and a shipped schedule's old target to its new one) first
    vet_file(cfg, str(path), record=True)
    for key in RERUN_KEYS:
        cfg.pop(key, None)
    return cfg


def read_plain(path: Path) -> Any:
    """A YAML file as plain lists and dicts in today's key names, its `${...}` kept as text (Hydra's `hydra.yaml`
    holds many)."""
    return renamed_config(OmegaConf.to_container(load_yaml_data(path, record=True), resolve=False))


def plain_select(node: Any, key: str) -> Any:
    """`node`'s value at the dotted `key` (None where it has none), in what `read_plain` gives."""
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node
