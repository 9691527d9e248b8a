"""`python -m sidestep.train [overrides]`: compose the config, check it, train, write the run directory.

The run directory is Hydra's (`hydra.run.dir`, or one numbered folder per job of a `-m` sweep). Its
`.hydra/config.yaml` is rewritten with the checked, fully resolved config, so a rerun from it needs nothing else;
it changes only when training really starts (see `run_record`). In a sweep, a job that fails is recorded as
failed in its own folder and the sweep goes on; the sweep then exits non-zero, naming the failed jobs.
"""

import atexit
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sidestep.config import TrainConfig, register_schemas, settled_config
from sidestep.config.run_name import RUN_NAME
from sidestep.config.saved import load_saved
from sidestep.errors import Interrupted, SidestepError
from sidestep.run_record import RECORD, RunRecord, register_resolver
from sidestep.sweep_outcome import WRITE_ERRNOS, JobFailed, record_failure
from sidestep.ui.app import run_app
from sidestep.ui.console import exit_on_user_error, is_plain, use_plain
from sidestep.ui.handover import offer_wizard
from sidestep.ui.help import CommandHelp, answer_help
from sidestep.ui.progress import TrainingProgress
from sidestep.ui.songs import preprocess_and_report

if TYPE_CHECKING:
    from sidestep.models.source import ModelSource
    from sidestep.training.loop import FitResult

log = logging.getLogger("sidestep.train")
HELP = CommandHelp(
    "python -m sidestep.train", "[group=option ...] [key=value ...] [-m for a sweep]",
    "Train an adapter (LoRA, DoRA, LoKr, LoHa, OFT) for an ACE-Step 1.5 model on your songs, and write one run folder\n"
    "(outputs/<date>/<run.name>/): the checked config, TensorBoard logs, checkpoints, samples, the adapter in every\n"
    "format and report.html. Without data.dataset_dir, at a terminal, it offers the wizard (python -m sidestep.wizard).",
    TrainConfig, "train",
    ("data.dataset_dir", "preprocess.audio_dir", "model.checkpoint_dir", "model.quantize", "adapter.rank", "adapter.alpha",
     "trainer.epochs", "trainer.max_steps", "trainer.batch_size", "optimizer.lr", "trainer.device",
     "trainer.precision", "run.name", "resume_from", "ui.yes", "ui.plain"),
    ("model", "experiment", "vram", "adapter", "optimizer", "scheduler", "attention"),
    "Every key with its value: python -m sidestep.train [overrides] --cfg job. Every key with its type, default and\n"
    "meaning: src/sidestep/config/schema.py and parts.py. Hydra's own flags (--multirun, --cfg, --config-dir): --hydra-help.")
register_schemas()
register_resolver()


def follow_the_main_process() -> None:
    """Under `accelerate launch`, every process runs this entry point, and Hydra would give each one its own
    `${now:}` run dir. Other ranks get a throwaway dir and write no `.hydra/`; training then adopts the main
    process's run dir (see `set_up_run`)."""
    if int(os.environ.get("RANK", "0")) > 0:
        scratch = tempfile.mkdtemp(prefix=f"sidestep-rank{os.environ['RANK']}-")
        atexit.register(shutil.rmtree, scratch, True)
        sys.argv += [f"hydra.run.dir={scratch}", "hydra.output_subdir=null"]


@hydra.main(version_base="1.3", config_path="pkg://sidestep.conf", config_name="train")
def main(cfg: DictConfig) -> Optional[float]:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    record = RunRecord(run_dir, hydra_cfg.output_subdir)
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    with contextlib.nullcontext() if sweeping else exit_on_user_error():  # one line and exit 2 for a single run
        try:
            return _train(cfg, record)
        except Interrupted as err:
            if sweeping:  # a signal stops the whole sweep, not just this job
                print(err, file=sys.stderr)
                sys.exit(err.exit_code)
            raise
        except Exception as err:
            if not sweeping and isinstance(err, SidestepError) and record.discard_refused(f"{hydra_cfg.job.name}.log"):
                raise  # refused before training: no run folder is left behind
            reason = record_failure(run_dir, err, owns_status=record.is_first or record.started)
            if sweeping:
                log.error("job %s failed: %s", run_dir.name, reason)
                log.debug("job failure", exc_info=True)
                raise JobFailed(run_dir, reason) from None  # Hydra records the job as failed and runs the next one
            if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:
                raise SidestepError(reason) from None
            raise
        finally:
            record.abandon()


def _train(cfg: DictConfig, record: RunRecord) -> Optional[float]:
    use_plain(cfg.ui.plain)
    offer_wizard(cfg)  # no dataset given, someone at the terminal: set one up instead of only failing
    _keep_run_name(cfg, record)
    # the start time in the name is the one Hydra put in the run dir's name (the same cached `${now:}`); resolved
    # here, as the checks below build a new config on the schema, where it would read the clock again
    cfg.run.name = str(cfg.run.name)
    cfg, model = settled_config(cfg, record.run_dir)
    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN  # the sweep was confirmed once, before its first job
    result = train_adapter(cfg, record.run_dir, on_start=record.start, confirmed=sweeping, model=model,
                           save_config=record.write_config)
    if result is None:
        return None
    return result.objective(early_stop=cfg.trainer.early_stop.patience is not None)  # what a sweeper minimises


def train_adapter(cfg: DictConfig, run_dir: Path, on_start: Optional[Callable[[Optional[Path]], None]] = None,
                  confirmed: bool = False, model: Optional["ModelSource"] = None,
                  save_config: Optional[Callable[[DictConfig], None]] = None) -> Optional["FitResult"]:
    """Songs first (`preprocess.audio_dir`), then the run's plan, shown and confirmed (unless `confirmed` already),
    then training with a progress display. None if the user declined. `model`: the source `cfg` was settled with
    (default: built from `cfg.model`); `on_start(resumed_from)`: see `fit`; `save_config`: see `set_up_run`."""
    # torch and diffusers are imported here, not at the top: a refused config or the wizard's offer never loads them
    from sidestep.models.source import model_source
    from sidestep.report_pages.run_page import PAGE
    from sidestep.training.loop import fit
    from sidestep.training.setup import set_up_run
    from sidestep.ui.summary import confirm, show

    plain = is_plain(cfg.ui.plain)
    songs = cfg.preprocess.audio_dir is not None
    make_dataset = partial(preprocess_and_report, cfg.preprocess, cfg.model, plain, "preprocess.") if songs else None
    with set_up_run(cfg, run_dir, model or model_source(cfg.model), make_dataset, save_config) as run:
        accelerator = run.accelerator
        if accelerator.is_main_process:
            show(run.plan)
            if not confirm(confirmed or cfg.ui.yes or accelerator.num_processes > 1):  # others would wait forever
                log.info("not started")
                return None
        progress = TrainingProgress(run.total_steps, run.epochs, plain, cfg.trainer.log_every,
                                    accelerator.is_main_process)
        result = fit(run, progress, on_start)
        if accelerator.is_main_process:  # the last line says where to look
            log.info("done: listen and compare in %s; the adapter files are in %s", run_dir / PAGE, result.adapter_dir)
        return result


def _keep_run_name(cfg: DictConfig, record: RunRecord) -> None:
    """A resume into a run dir is the same run: unless `run.name` is given again, it keeps the name its record
    holds (its default holds this start's time), so its files keep their names."""
    saved = record.run_dir / RECORD / "config.yaml"
    given = any(o.startswith("run.name=") for o in HydraConfig.get().overrides.task)
    if cfg.resume_from is None or record.is_first or given or not saved.is_file() or not saved.stat().st_size:
        return
    name = OmegaConf.select(load_saved(saved), "run.name")
    if isinstance(name, str) and RUN_NAME.fullmatch(name):
        cfg.run.name = name


if __name__ == "__main__":
    answer_help(sys.argv[1:], HELP)
    follow_the_main_process()
    run_app(main, check_schema=True)
