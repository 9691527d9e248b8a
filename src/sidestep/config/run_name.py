"""What a run is called: `run.name`'s default, and the run dir's last folder (resolvers the YAML calls)."""

import os
import re
from pathlib import Path
from typing import List

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

RUN_NAME = re.compile(r"[A-Za-z0-9_-]+")  # it becomes file names and a PEFT adapter name, which may not hold a dot

STAMPED = re.compile(r"-\d{8}-\d{6}$")  # a start time at the end of a run's name


SWEEP_VARIES = "SIDESTEP_SWEEP_VARIES"  # the keys a grid sweep varies, set for its jobs by sidestep.ui.sweep
SHORT = {"adapter.rank": "r", "adapter.alpha": "a", "adapter.alpha_ratio": "ar", "adapter.dropout": "do", "optimizer.lr": "lr",
         "optimizer.weight_decay": "wd", "scheduler.warmup_steps": "wu", "trainer.epochs": "ep",
         "trainer.max_steps": "steps", "trainer.batch_size": "bs", "trainer.seed": "seed"}


def default_run_name(time: str, _root_: DictConfig) -> str:
    """`<dataset folder or experiment>-<time>`, in letters, digits, - and _ (it becomes file names and a PEFT adapter
    name, which may not hold a dot). A sweep's job is named by what varies instead of its start time:
    `<dataset>-r16-lr1e-4` (a search's trials also by their number, as a search may draw the same values twice)."""
    folder = OmegaConf.select(_root_, "data.dataset_dir") or OmegaConf.select(_root_, "preprocess.audio_dir")
    experiment, varies = None, None
    try:
        hydra = HydraConfig.get()
        experiment = hydra.runtime.choices.get("experiment")
        varies = _job_settings(hydra) if hydra.mode == RunMode.MULTIRUN else None
    except ValueError:  # composed outside a Hydra run (tests, sidestep.rerun's check)
        pass
    base = Path(str(folder)).name if folder else experiment or "run"
    parts = [re.sub(r"[^A-Za-z0-9_-]+", "-", base).strip("-") or "run"] + ([time] if varies is None else varies)
    return "-".join(parts)


def _job_settings(hydra: DictConfig) -> List[str]:
    """What this job of a sweep sets that the sweep varies, shortly (`r16`, `lr1e-4`, `lokr`)."""
    search = OmegaConf.select(hydra, "sweeper.n_trials") is not None
    varies = [k for k in os.environ.get(SWEEP_VARIES, "").split(",") if k] or list(
        OmegaConf.select(hydra, "sweeper.params") or {})
    typed = dict(o.split("=", 1) for o in hydra.overrides.task if "=" in o)
    parts = [_short(key, typed[key]) for key in varies if key in typed]
    return ([str(hydra.job.num)] if search or not parts else []) + parts


def _short(key: str, value: str) -> str:
    try:
        number = float(value)
        value = value if re.fullmatch(r"-?\d+", value) else _number(number)
    except ValueError:
        pass
    label = SHORT.get(key, "" if "." not in key else key.rsplit(".", 1)[1])  # a group's option speaks for itself
    return re.sub(r"[^A-Za-z0-9_-]+", "-", label + value.replace(".", "p")).strip("-")


def _number(value: float) -> str:
    """1e-4, 3.5e-5, 0.5, 12.5: short, and the same for the same value however it was typed."""
    if value and not 1e-2 <= abs(value) < 1e4:
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{value:.3g}"


def run_dir_leaf(name: str, time: str) -> str:
    """The run dir's last folder: the name, which by default already ends in the start time; a name the user gave
    gets `-<start time>` added, so a second run of the same name never writes into the first one's folder (a
    rerun of a saved config swaps the earlier start time for its own)."""
    return name if name.endswith(time) else f"{STAMPED.sub('', name)}-{time}"


def register_run_name_resolvers() -> None:
    if not OmegaConf.has_resolver("sidestep_run_name"):
        OmegaConf.register_new_resolver("sidestep_run_name", default_run_name)
        OmegaConf.register_new_resolver("sidestep_run_dir_leaf", run_dir_leaf)
