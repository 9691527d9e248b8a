"""`python -m sidestep.estimate [overrides]`: which layers matter for this dataset, and a LoRA rank plan.

Shares the training config (model, data, attention, training groups); writes `<run>/estimate.json` (train with
`lora.rank_map=<that file>`), a ranked table and `<run>/estimate.png`.
"""

import hydra
from omegaconf import DictConfig

from sidestep.config import register_schemas
from sidestep.train import resolve_run
from sidestep.ui.console import exit_on_user_error, use_plain

register_schemas()


@hydra.main(version_base="1.3", config_path="pkg://sidestep.conf", config_name="train")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        use_plain(cfg.ui.plain)
        cfg, run_dir = resolve_run(cfg)
        from sidestep.training.estimation import estimate

        estimate(cfg, run_dir)


if __name__ == "__main__":
    main()
