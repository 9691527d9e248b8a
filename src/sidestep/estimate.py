"""`python -m sidestep.estimate [overrides]`: which layers matter for this dataset, and a LoRA rank plan.

Shares the training config (model, data, attention, training groups); writes `<run>/estimate.json` (train with
`lora.rank_map=<that file>`), a ranked table and `<run>/estimate.png`.
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sidestep.config import register_schemas
from sidestep.config.build import build
from sidestep.errors import ConfigError
from sidestep.run_record import RunRecord
from sidestep.train import resolve_run
from sidestep.ui.app import run_app
from sidestep.ui.console import use_plain

register_schemas()


@hydra.main(version_base="1.3", config_path="pkg://sidestep.conf", config_name="train")
def main(cfg: DictConfig) -> None:
    use_plain(cfg.ui.plain)
    kind = build(cfg.adapter)
    if not kind.takes_rank_map:
        raise ConfigError(f"adapter: the estimate plans per-module LoRA ranks, which {type(kind).__name__} does not "
                          "take; run it with adapter=lora or adapter=dora")
    cfg, run_dir = resolve_run(cfg)
    RunRecord(run_dir, HydraConfig.get().output_subdir).start(None)
    from sidestep.training.estimation import estimate

    estimate(cfg, run_dir)


if __name__ == "__main__":
    run_app(main, check_schema=True)
