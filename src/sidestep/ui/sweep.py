"""Once per `-m` sweep (a Hydra callback, `hydra.callbacks.sweep` in conf/train.yaml): before the first job, the
grid and its total steps are shown and confirmed once (its jobs never ask); after the last, the sweep's
`report.html` is written and its table printed, best marked."""

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig
from rich.prompt import Confirm
from rich.table import Table

from sidestep.config.run_name import SWEEP_VARIES
from sidestep.errors import SidestepError
from sidestep.sweep_outcome import SweepEnded
from sidestep.ui.console import SKIP_HINT, console, is_interactive, use_plain

if TYPE_CHECKING:
    from sidestep.training.sweep_plan import SweepPlan

log = logging.getLogger("sidestep.sweep")


class NotStarted(SidestepError):
    exit_code = 0


class SweepCallbacks(Callback):
    """Hydra builds its callbacks for a single run too: what a sweep needs (torch among it) is imported only when a
    sweep starts or ends, so a refused single run still never loads torch."""

    def on_multirun_start(self, config: DictConfig, config_name: Optional[str] = None, **kwargs) -> None:
        from sidestep.training.sweep_plan import check_launcher, plan_sweep

        use_plain(config.ui.plain)
        try:
            check_launcher(config)
            plan = plan_sweep(config, config_name)
        except SidestepError as err:
            raise SweepEnded(err) from None  # a callback's Exception would only be a warning
        os.environ[SWEEP_VARIES] = ",".join(plan.varies)  # names its jobs (config.run_name), in any launcher's process
        show(plan)
        if not config.ui.yes and is_interactive() and not Confirm.ask(
                f"Start the {plan.runs} runs? {SKIP_HINT}", default=True, console=console):
            raise SweepEnded(NotStarted("sweep not started"))

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        """One line per sweep job, with only what varies (Hydra's own names every override, in its format)."""
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        varies = set(filter(None, os.environ.get(SWEEP_VARIES, "").split(",")))
        task = [str(o) for o in config.hydra.overrides.task]
        settings = " ".join(o for o in task if o.split("=", 1)[0].lstrip("+~") in varies) or "(defaults)"
        log.info("sweep job %s: %s", config.hydra.job.num, settings)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        os.environ.pop(SWEEP_VARIES, None)
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        from sidestep.report_pages.write import write_report
        from sidestep.ui.report_table import print_report

        logging.getLogger("tensorboard").setLevel(logging.WARNING)  # its reader's "No path found after" notes
        try:
            report = write_report(sweep_dir.resolve())
        except SidestepError as err:  # no job got as far as its record
            log.warning("no sweep report: %s", err)
            return
        print_report(report)


def show(plan: "SweepPlan") -> None:
    if plan.trials is not None:
        title = f"Optuna search: {plan.trials} trials over {', '.join(plan.varies) or 'nothing'}"
    else:
        title = f"Sweep: {plan.runs} runs"
    table = Table(title=title, title_justify="left")
    for column in ("job" if plan.trials is None else "every trial", "varies" if plan.trials is None else "settings",
                   "steps"):
        table.add_column(column, overflow="fold")
    for number, job in enumerate(plan.jobs):
        label = str(number) if plan.trials is None else "base"
        settings = plan.settings(job) if plan.trials is None else " ".join(job.overrides) or "(defaults)"
        steps = f"refused: {job.refused}" if job.refused else "?" if job.total_steps is None else f"{job.total_steps:,}"
        table.add_row(label, settings, steps)
    console.print(table)
    total = plan.total_steps
    console.print(f"{plan.runs} runs, " + (f"{total:,} optimizer steps in all" if total is not None else
                                          "steps known once their songs are preprocessed"),
                  markup=False, highlight=False)
