"""`python -m sidestep.estimate [overrides]`: which layers matter for this dataset, and a LoRA rank plan.

Shares the training config (model, data, attention, training groups); writes `<run>/estimate.json` (train with
`adapter.rank_map=<that file>`), a ranked table and `<run>/estimate.png`.
"""

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.table import Table

from sidestep.config import TrainConfig, register_schemas, settled_config
from sidestep.config.parts import adapter_schema
from sidestep.errors import ConfigError, SidestepError
from sidestep.run_record import RunRecord, register_resolver
from sidestep.ui.app import run_app
from sidestep.ui.console import console, use_plain
from sidestep.ui.help import CommandHelp, answer_help
from sidestep.ui.progress import BatchProgress

log = logging.getLogger("sidestep.estimate")
register_schemas()
register_resolver()
HELP = CommandHelp(
    "python -m sidestep.estimate", "[group=option ...] [key=value ...] (the training config)",
    "Score how much each attention projection matters for this dataset (its Fisher information, from training's\n"
    "own loss) and plan LoRA ranks from it: <run>/estimate.json, trained with adapter.rank_map=<that file>.",
    TrainConfig, "train",
    ("data.dataset_dir", "model.checkpoint_dir", "estimate.batches", "estimate.include_mlp", "estimate.budget_params",
     "estimate.ranks", "adapter.rank", "trainer.device"),
    ("model", "attention"),
    "It takes every training key (python -m sidestep.train --help); the README's \"Which layers matter\".")


@hydra.main(version_base="1.3", config_path="pkg://sidestep.conf", config_name="train")
def main(cfg: DictConfig) -> None:
    plain = use_plain(cfg.ui.plain)
    record = RunRecord(Path(HydraConfig.get().runtime.output_dir), HydraConfig.get().output_subdir)
    try:
        kind = adapter_schema(cfg.adapter.get("_target_"))
        if kind is not None and not kind.takes_rank_map:
            raise ConfigError(f"adapter: the estimate plans per-module LoRA ranks, which {kind.label} does "
                              "not take; run it with adapter=lora or adapter=dora")
        cfg, model = settled_config(cfg, record.run_dir)
        record.write_config(cfg)
    except SidestepError:  # refused: no run folder is left behind
        record.discard_refused(f"{HydraConfig.get().job.name}.log")
        raise
    record.start(None)
    # imported here: it loads torch and diffusers, which a refused config never needs
    from sidestep.training.estimation import GROUPINGS, estimate

    result = estimate(cfg, record.run_dir, BatchProgress(cfg.estimate.batches, plain), model)
    for grouping in GROUPINGS:
        table = Table(title=f"Sensitivity by {grouping} ({result.batches} batches)", title_justify="left")
        for column in (grouping, "share", "planned ranks"):
            table.add_column(column)
        for group, share, ranks in result.shares(grouping):
            table.add_row(group, f"{100 * share:5.1f} %", ranks)
        console.print(table)
    log.info("estimate written to %s: %d of %d modules get LoRA, %s of %s parameters; train with adapter.rank_map=%s",
             result.path, result.modules_with_lora, len(result.plan), f"{result.used_params:,}", f"{result.budget:,}",
             result.path)


if __name__ == "__main__":
    answer_help(sys.argv[1:], HELP)
    run_app(main, check_schema=True)
