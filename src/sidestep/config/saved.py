"""A run's `.hydra/config.yaml`: the resolved config, plus what Hydra needs to rerun it the way the run ran.

`python -m sidestep.train --config-path RUN/.hydra --config-name config` loads this file as its primary config,
without the app's `train.yaml`, so on its own it would lose the app's run-dir pattern and log format. The file
therefore also carries the app's `hydra:` settings (run and sweep dirs, no chdir) and picks its log format
(`hydra/job_logging: sidestep`, found through `hydra.searchpath`). Readers of the values take them without those
two keys (`load_saved`); Hydra removes them itself before a rerun's config reaches the trainer.
"""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

import sidestep.conf

APP_CONFIG = Path(sidestep.conf.__file__).parent / "train.yaml"
RERUN_KEYS = ("defaults", "hydra")


def saved_text(resolved: dict) -> str:
    """YAML of the resolved config with the app's Hydra settings, their interpolations (`${now:...}`) kept."""
    app = OmegaConf.load(APP_CONFIG).hydra
    rerun = {"defaults": [{"override hydra/job_logging": "sidestep"}, "_self_"],
             "hydra": {"searchpath": ["pkg://sidestep.conf"], "run": app.run, "sweep": app.sweep, "job": app.job}}
    return OmegaConf.to_yaml(OmegaConf.create({**rerun, **resolved}))


def load_saved(path: Path) -> DictConfig:
    """The run's config values, without what only a Hydra rerun needs."""
    cfg = OmegaConf.load(path)
    for key in RERUN_KEYS:
        cfg.pop(key, None)
    return cfg
