"""What a run is called: `run.name`'s default, and the run dir's last folder (resolvers the YAML calls)."""

import re
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

RUN_NAME = re.compile(r"[A-Za-z0-9_-]+")  # it becomes file names and a PEFT adapter name, which may not hold a dot

STAMPED = re.compile(r"-\d{8}-\d{6}$")  # a start time at the end of a run's name


def default_run_name(time: str, _root_: DictConfig) -> str:
    """`<dataset folder or experiment>-<time>`, and `-<job number>` in a sweep, in letters, digits, - and _ (it
    becomes file names and a PEFT adapter name, which may not hold a dot)."""
    folder = OmegaConf.select(_root_, "data.dataset_dir") or OmegaConf.select(_root_, "preprocess.audio_dir")
    experiment, job = None, None
    try:
        hydra = HydraConfig.get()
        experiment = hydra.runtime.choices.get("experiment")
        job = hydra.job.num if hydra.mode == RunMode.MULTIRUN else None
    except ValueError:  # composed outside a Hydra run (tests, sidestep.rerun's check)
        pass
    base = Path(str(folder)).name if folder else experiment or "run"
    parts = [re.sub(r"[^A-Za-z0-9_-]+", "-", base).strip("-") or "run", time] + ([str(job)] if job is not None else [])
    return "-".join(parts)


def run_dir_leaf(name: str, time: str) -> str:
    """The run dir's last folder: the name, which by default already ends in the start time; a name the user gave
    gets `-<start time>` added, so a second run of the same name never writes into the first one's folder (a
    rerun of a saved config swaps the earlier start time for its own)."""
    return name if name.endswith(time) else f"{STAMPED.sub('', name)}-{time}"


def register_run_name_resolvers() -> None:
    if not OmegaConf.has_resolver("sidestep_run_name"):
        OmegaConf.register_new_resolver("sidestep_run_name", default_run_name)
        OmegaConf.register_new_resolver("sidestep_run_dir_leaf", run_dir_leaf)
