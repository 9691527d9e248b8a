"""`python -m sidestep.analyze SONGS_DIR [write=fill_missing|overwrite|off] [force=true]`: measure each song's
tempo, key, time signature, duration and loudness, and write the confident labels into its sidecar.

`write=fill_missing` (the default) fills only what a sidecar leaves out (or what an earlier analysis wrote), so a
label you wrote stays; `overwrite` replaces them; `off` only measures. Every measurement, with its confidence, goes
to `SONGS_DIR/analysis.json`; songs measured before with the same audio are not measured again.
"""

import logging
import sys
from pathlib import Path
from typing import Optional

import hydra
from omegaconf import DictConfig, OmegaConf

from sidestep.config import register_schemas
from sidestep.config.checks import checked_analyze_config
from sidestep.config.overrides import path_argument
from sidestep.config.schema import AnalyzeConfig
from sidestep.ui.app import run_app
from sidestep.ui.console import exit_on_user_error, use_plain
from sidestep.ui.help import CommandHelp, answer_help
from sidestep.ui.songs import analyse_and_report

log = logging.getLogger("sidestep.analyze")
register_schemas()
HELP = CommandHelp(
    "python -m sidestep.analyze", "SONGS_DIR [write=fill_missing|overwrite|off] [force=true] [key=value ...]",
    "Measure each song's tempo, key, time signature, duration and loudness from the audio, and write the confident\n"
    "labels into its sidecar (a label you wrote stays unless write=overwrite). Everything measured, with its\n"
    "confidence, goes to SONGS_DIR/analysis.json; songs measured before with the same audio are skipped.",
    AnalyzeConfig, "analyze",
    ("write", "force", "workers", "min_bpm_confidence", "min_key_confidence", "min_signature_confidence"),
    (),
    "Every key with its type, default and meaning: AnalyzeConfig in src/sidestep/config/schema.py; the README's\n"
    "\"Labels from the audio\". Hydra's own flags (--cfg job): --hydra-help.")


def log_dir(songs_dir: Optional[str]) -> str:
    """Each run's log and resolved config go beside the songs, in a hidden folder the song search skips; a songs
    folder that does not exist (refused) is not created by it."""
    if songs_dir is None or not Path(songs_dir).is_dir():
        return str(Path("outputs") / "analyze")
    return str(Path(songs_dir) / ".analyze")


OmegaConf.register_new_resolver("analyze_log_dir", log_dir, replace=True)


@hydra.main(version_base="1.3", config_path="pkg://sidestep.conf", config_name="analyze")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        plain = use_plain(cfg.ui.plain)
        cfg = checked_analyze_config(cfg)
        outcome = analyse_and_report(cfg.songs_dir, cfg.write, cfg, cfg.force, plain)
        written = sum(change.status == "written" for change in outcome.changes)
        flagged = sum(change.status == "flagged" for change in outcome.changes)
        log.info("%d labels written, %d flagged for review (low confidence); every measurement is in %s", written,
                 flagged, outcome.report)


if __name__ == "__main__":
    answer_help(sys.argv[1:], HELP)
    sys.argv = path_argument("songs_dir", sys.argv)
    run_app(main)
