"""A `-m` sweep worked out before its first job starts: the jobs of the grid (or the trials of a search), what
varies between them, and how many optimizer steps each will take, so the sweep is confirmed once, on its whole.

Every job's config is composed and checked here as its job will compose and resolve it (the checkpoint's shape
included, which its samples are checked against). A job whose config is refused is
listed with the reason and the sweep still runs the others (it fails in its own folder, as before); a sweep in
which every job would be refused, or whose launcher cannot run here, stops before it starts.
"""

import contextlib
import logging
import shutil
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from sidestep.config import resolve
from sidestep.data.loader import make_loader, open_dataset
from sidestep.errors import SidestepError, first_line, plain
from sidestep.training.plan import schedule_lengths


@dataclass
class SweepJob:
    overrides: List[str]  # what the job is composed with (a search: what every trial shares)
    total_steps: Optional[int] = None  # None: refused, or its songs are not preprocessed yet
    refused: Optional[str] = None  # the one-line reason its config is refused
    reason: str = ""  # all of it (a list of bad files, say), for a sweep that stops on it


@dataclass
class SweepPlan:
    jobs: List[SweepJob]  # a grid's jobs in order; a search: one, the base every trial starts from
    varies: List[str] = field(default_factory=list)  # the keys whose value differs between jobs or trials
    trials: Optional[int] = None  # a search's number of trials (Optuna); None for a grid

    @property
    def runs(self) -> int:
        return self.trials if self.trials is not None else len(self.jobs)

    @property
    def total_steps(self) -> Optional[int]:
        """Optimizer steps of the whole sweep, refused jobs left out; None when a job's length is not known yet."""
        steps = [job.total_steps for job in self.jobs if job.refused is None]
        if not steps or any(s is None for s in steps):
            return None
        return sum(steps) * (self.trials or 1)

    def settings(self, job: SweepJob) -> str:
        """Only what varies, as typed: `adapter.rank=16 optimizer.lr=1e-4`."""
        return " ".join(o for o in job.overrides if _key(o) in self.varies) or "(defaults)"


def check_launcher(config: DictConfig) -> None:
    """The SLURM launcher submits with `sbatch`: without it every job would end in a traceback."""
    target = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
    if "SlurmLauncher" in target and shutil.which("sbatch") is None:
        raise SidestepError("hydra/launcher=slurm needs SLURM, and sbatch is not on this machine's PATH: run the "
                            "command on the cluster's login node, or use hydra/launcher=parallel (or "
                            "submitit_local) to run the jobs here")


def plan_sweep(config: DictConfig, config_name: Optional[str]) -> SweepPlan:
    """The sweep `config` (the primary config of a `-m` command) will run; raises a `SidestepError` when no job of
    it could run."""
    task = [str(o) for o in OmegaConf.to_container(config.hydra.overrides.task)]
    sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_") or "")
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    typed = [f"{key}={value}" for key, value in params.items()] + task
    parsed = OverridesParser.create().parse_overrides(typed)
    datasets: Dict[Tuple, int] = {}
    if "optuna" in sweeper.lower():
        searched = [o.get_key_element() for o in parsed if o.is_sweep_override()]
        base = [o.input_line for o in parsed if not o.is_sweep_override()]
        plan = SweepPlan([_job(config_name, base, datasets)], searched, int(config.hydra.sweeper.n_trials))
    else:
        (grid,) = BasicSweeper.split_arguments(parsed, None)
        plan = SweepPlan([_job(config_name, overrides, datasets) for overrides in grid], _varying(grid))
    refused = [job.reason for job in plan.jobs if job.refused]
    if len(refused) == len(plan.jobs):
        every = "the search's base config is" if plan.trials else "every job's config is"
        raise SidestepError(f"{every} refused, so the sweep does not start: {refused[0]}")
    return plan


def _job(config_name: Optional[str], overrides: List[str], datasets: Dict[Tuple, int]) -> SweepJob:
    job = SweepJob(overrides)
    try:
        with _quiet(logging.getLogger("sidestep.models")):  # each job logs what its checkpoint decides when it starts
            cfg = resolve(compose(config_name=config_name or "train", overrides=overrides))
        job.total_steps = _total_steps(cfg, datasets)
    except SidestepError as err:
        job.refused, job.reason = first_line(err), plain(str(err)).strip()
    return job


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _total_steps(cfg: DictConfig, datasets: Dict[Tuple, int]) -> Optional[int]:
    """As the job will count them on one process; None while its songs wait to be preprocessed."""
    if cfg.preprocess.audio_dir is not None:
        return None
    batch, seed = cfg.trainer.batch_size, cfg.trainer.seed
    key = (str(OmegaConf.to_container(cfg.data)), cfg.data.val_fraction, seed, batch, str(cfg.model.arch))
    if key not in datasets:  # every job of a grid over the adapter reads the same data: open and check it once
        train_set, _ = open_dataset(cfg).split(cfg.data.val_fraction, seed)
        datasets[key] = len(make_loader(cfg, train_set, "cpu")[0])
    return schedule_lengths(cfg, datasets[key], 1)[1]


def _varying(grid: List[List[str]]) -> List[str]:
    values: Dict[str, set] = {}
    for overrides in grid:
        for override in overrides:
            values.setdefault(_key(override), set()).add(override)
    return [key for key, seen in values.items() if len(seen) > 1]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")

