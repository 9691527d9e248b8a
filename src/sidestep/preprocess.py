"""`python -m sidestep.preprocess audio_dir=./songs out_dir=./tensors/jazz [model=base model.checkpoint_dir=...]`:
turn a folder of songs into the tensors training reads.

Songs already done with the same audio and settings are skipped, so an interrupted run is simply started again.
Exits non-zero only when no song could be used; the table at the end names every file that failed and why.
"""

import logging
import re
import sys
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from sidestep.config import register_schemas
from sidestep.config.build import build
from sidestep.config.checks import checked_preprocess_config
from sidestep.config.schema import PreprocessConfig
from sidestep.config.trust import take_allow_flags
from sidestep.errors import SidestepError
from sidestep.run_record import discard_folder
from sidestep.ui.console import exit_on_user_error, use_plain
from sidestep.ui.help import CommandHelp, answer_help
from sidestep.ui.songs import preprocess_and_report

log = logging.getLogger("sidestep.preprocess")
register_schemas()
HELP = CommandHelp(
    "python -m sidestep.preprocess", "audio_dir=SONGS out_dir=TENSORS [model=VARIANT model.checkpoint_dir=DIR] [key=value ...]",
    "Turn a folder of songs into the tensors training reads (data.dataset_dir=TENSORS), with the VAE and text\n"
    "encoder of your ACE-Step checkpoints folder. Songs already done with the same audio and settings are skipped.",
    PreprocessConfig, "preprocess",
    ("audio_dir", "out_dir", "model.checkpoint_dir", "dataset_json", "trigger_tag", "trigger_position",
     "max_duration", "force", "device", "precision"),
    ("model",),
    "Every key with its type, default and meaning: PreprocessSettings in src/sidestep/config/schema.py; the README's\n"
    "\"Turning songs into training data\". Hydra's own flags (--cfg job): --hydra-help.")


def log_dir(out_dir: Optional[str]) -> str:
    """Each run's log and resolved config go beside the tensors; with no out_dir (refused) nothing is created
    in a folder named after a missing value."""
    return str(Path("outputs") / "preprocess" if out_dir is None else Path(out_dir) / ".preprocess")


OmegaConf.register_new_resolver("preprocess_log_dir", log_dir, replace=True)
LOG_PARENTS = (re.compile(r"\.?preprocess"), re.compile(r".*"))  # <out_dir>/.preprocess/ and out_dir (or outputs/)


@hydra.main(version_base="1.3", config_path="pkg://sidestep.conf", config_name="preprocess")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        plain = use_plain(cfg.ui.plain)
        try:
            cfg = checked_preprocess_config(cfg)
            source = build(cfg.model)
            source.settle(cfg.model)  # what the checkpoint says: arch, variant
            source.require_encoders()  # before the songs are listed and hashed
        except SidestepError:  # refused: the log folder Hydra made for this run goes, and empty ones above it
            discard_folder(Path(HydraConfig.get().runtime.output_dir), {".hydra", "preprocess.log"}, LOG_PARENTS)
            raise
        outcome = preprocess_and_report(cfg, cfg.model, plain)
        log.info("%d samples ready in %s; train on them with data.dataset_dir=%s", outcome.usable, outcome.out_dir,
                 outcome.out_dir)


if __name__ == "__main__":
    answer_help(sys.argv[1:], HELP)
    with exit_on_user_error():
        sys.argv = take_allow_flags(sys.argv)
    main()
