"""`python -m sidestep.train [overrides]`: compose the config, check it, train, write the run directory.

The run directory is Hydra's (`hydra.run.dir`, or one numbered folder per job of a `-m` sweep). Its
`.hydra/config.yaml` is rewritten with the checked, fully resolved config, so a rerun from it needs nothing else.
"""

import atexit
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional, Tuple

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sidestep.config import as_container, prepare, register_schemas
from sidestep.config.saved import saved_text
from sidestep.ui.console import exit_on_user_error, use_plain
from sidestep.wizard import offer_wizard

log = logging.getLogger("sidestep.train")
register_schemas()


def follow_the_main_process() -> None:
    """Under `accelerate launch`, every process runs this entry point, and Hydra would give each one its own
    `${now:}` run dir. Other ranks get a throwaway dir and write no `.hydra/`; training then adopts the main
    process's run dir (see `fit`)."""
    if int(os.environ.get("RANK", "0")) > 0:
        scratch = tempfile.mkdtemp(prefix=f"sidestep-rank{os.environ['RANK']}-")
        atexit.register(shutil.rmtree, scratch, True)
        sys.argv += [f"hydra.run.dir={scratch}", "hydra.output_subdir=null"]


def resolve(cfg: DictConfig) -> DictConfig:
    """The config a run really uses: checked, and with the model numbers the checkpoint's config.json gives."""
    cfg = prepare(cfg)
    if cfg.model.variant != "tiny":
        from sidestep.models.checkpoints import apply_checkpoint_config

        apply_checkpoint_config(cfg.model)
    return cfg


def resolve_run(cfg: DictConfig) -> Tuple[DictConfig, Path]:
    """`resolve`, then save the result over Hydra's `.hydra/config.yaml`. Shared by every entry point that runs
    on a model."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    cfg = resolve(cfg)
    if cfg.preprocess.audio_dir is not None:  # songs first: training reads what preprocessing writes
        cfg.preprocess.out_dir = cfg.preprocess.out_dir or cfg.data.dataset_dir or str(run_dir / "dataset")
        cfg.data.dataset_dir = cfg.preprocess.out_dir
    if HydraConfig.get().output_subdir is not None:
        (run_dir / HydraConfig.get().output_subdir / "config.yaml").write_text(saved_text(as_container(cfg)))
    return cfg, run_dir


@hydra.main(version_base="1.3", config_path="pkg://sidestep.conf", config_name="train")
def main(cfg: DictConfig) -> Optional[float]:
    with exit_on_user_error():
        use_plain(cfg.ui.plain)
        offer_wizard(cfg)  # no dataset given, someone at the terminal: set one up instead of only failing
        cfg, run_dir = resolve_run(cfg)
        from sidestep.training.loop import (
            fit,  # torch, diffusers: only once the config is known to be good
        )

        result = fit(cfg, run_dir)
        if result is None:
            return None
        return result.final_loss if result.val_loss is None else result.val_loss  # what a sweeper minimises


if __name__ == "__main__":
    follow_the_main_process()
    main()
