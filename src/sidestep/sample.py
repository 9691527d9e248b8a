"""`python -m sidestep.sample <run dir | adapter dir | checkpoint dir> prompt="warm lofi piano" [compare=true]`:
render what an adapter plays, as 48 kHz stereo WAVs with a JSON of every setting beside each.

`compare=true` renders the same prompt and seed without the adapter too (and at `compare_strengths`), so the
difference heard is the adapter's alone. Files go to `<run>/samples/<time>/` unless `hydra.run.dir` says otherwise.
"""

import logging
import sys
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from sidestep.config import register_schemas
from sidestep.config.checks import checked_sample_config
from sidestep.config.overrides import path_argument
from sidestep.config.schema import SampleConfig
from sidestep.config.trust import take_allow_flags
from sidestep.ui.console import exit_on_user_error, use_plain
from sidestep.ui.help import CommandHelp, answer_help

log = logging.getLogger("sidestep.sample")
register_schemas()
HELP = CommandHelp(
    "python -m sidestep.sample", "RUN_DIR | ADAPTER_DIR | CHECKPOINT_DIR [key=value ...]",
    "Render what an adapter plays: 48 kHz stereo WAVs with a JSON of every setting beside each, in\n"
    "<run>/samples/<time>/. By default the captions of the songs it was trained on, as long as the run's own samples.",
    SampleConfig, "sample",
    ("checkpoint", "prompt", "lyrics", "prompts", "count", "duration", "seed", "strength", "compare", "compare_strengths", "steps",
     "guidance", "model.checkpoint_dir", "device"),
    ("model",),
    "Every key with its type, default and meaning: SampleConfig in src/sidestep/config/schema.py; the README's\n"
    "\"Listening to your LoRA\". Hydra's own flags (--cfg job, hydra.run.dir=...): --hydra-help.")


def _samples_dir(source: str) -> str:
    # imported when Hydra resolves the run dir, not at the top: it loads torch, which --help does not need
    from sidestep.training.adapter_sources import samples_dir

    return samples_dir(source)


OmegaConf.register_new_resolver("samples_dir", _samples_dir, replace=True)


@hydra.main(version_base="1.3", config_path="pkg://sidestep.conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        plain = use_plain(cfg.ui.plain)
        cfg = checked_sample_config(cfg)
        from sidestep.training.adapter_samples import render_samples  # torch and diffusers: once the config is good

        out = Path(HydraConfig.get().runtime.output_dir)
        written = render_samples(cfg, list(HydraConfig.get().overrides.task), out, plain)
        page = refresh_report(out)
        log.info("%d samples in %s%s", len(written), out, f"; listen beside the run's own in {page}" if page else "")


def refresh_report(out: Path) -> Optional[Path]:
    """The page of the run whose `samples/` the files went to, rewritten so they are on it; None outside a run."""
    run = out.parent.parent
    if out.parent.name != "samples" or not (run / ".hydra" / "config.yaml").is_file():
        return None
    from sidestep.report_pages.write import write_report

    write_report(run)
    return run / "report.html"


if __name__ == "__main__":
    answer_help(sys.argv[1:], HELP)
    with exit_on_user_error():
        sys.argv = path_argument("source", take_allow_flags(sys.argv))
    main()
