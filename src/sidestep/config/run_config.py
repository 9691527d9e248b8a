"""The config a run really uses, shared by every entry point that runs on a model and by the wizard's checks."""

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Tuple

from omegaconf import DictConfig

from sidestep.config.build import build
from sidestep.config.checks import checked_train_config

if TYPE_CHECKING:  # the models package sits above config
    from sidestep.models.source import ModelSource


def settled_config(cfg: DictConfig, run_dir: Optional[Path] = None) -> Tuple[DictConfig, "ModelSource"]:
    """The config a run really uses and the model source that settled it: checked, with what the source says of
    its weights (a checkpoint's architecture, `model=auto`'s variant); with songs to preprocess, the encoders they
    need are there, and their tensors go to `preprocess.out_dir` (default: `run_dir/dataset`), which training reads.
    The source is the run's: built once here, handed to what loads weights."""
    cfg = checked_train_config(cfg)
    source = build(cfg.model)
    source.settle(cfg.model)
    if cfg.preprocess.audio_dir is not None:  # songs first: the encoders must be there before any work starts
        source.require_encoders()
        if run_dir is not None:
            cfg.preprocess.out_dir = cfg.preprocess.out_dir or cfg.data.dataset_dir or str(run_dir / "dataset")
            cfg.data.dataset_dir = cfg.preprocess.out_dir
    return cfg, source
