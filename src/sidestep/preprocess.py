"""`python -m sidestep.preprocess audio_dir=./songs out_dir=./tensors/jazz [model=base model.checkpoint_dir=...]`:
turn a folder of songs into the tensors training reads.

Songs already done with the same audio and settings are skipped, so an interrupted run is simply started again.
Exits non-zero only when no song could be used; the table at the end names every file that failed and why.
"""

import logging
from pathlib import Path
from typing import Optional

import hydra
from omegaconf import DictConfig, OmegaConf

from sidestep.config import register_schemas
from sidestep.config.build import build
from sidestep.config.checks import prepare_preprocess
from sidestep.ui.console import exit_on_user_error, use_plain

log = logging.getLogger("sidestep.preprocess")
register_schemas()


def log_dir(out_dir: Optional[str]) -> str:
    """Each run's log and resolved config go beside the tensors; with no out_dir (refused) nothing is created
    in a folder named after a missing value."""
    return str(Path("outputs") / "preprocess" if out_dir is None else Path(out_dir) / ".preprocess")


OmegaConf.register_new_resolver("preprocess_log_dir", log_dir, replace=True)


@hydra.main(version_base="1.3", config_path="pkg://sidestep.conf", config_name="preprocess")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        plain = use_plain(cfg.ui.plain)
        cfg = prepare_preprocess(cfg)
        build(cfg.model).settle(cfg.model)  # what the checkpoint says: arch, variant
        from sidestep.preprocessing.run import (
            preprocess_and_report,  # torch, diffusers: only once the config is known good
        )

        outcome = preprocess_and_report(cfg, cfg.model, plain)
        log.info("%d samples ready in %s; train on them with data.dataset_dir=%s", outcome.usable, outcome.out_dir,
                 outcome.out_dir)


if __name__ == "__main__":
    main()
