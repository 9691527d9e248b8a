"""The config a run really uses, shared by every entry point that runs on a model and by the wizard's checks."""

from pathlib import Path
from typing import Tuple

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sidestep.config.build import build
from sidestep.config.checks import prepare
from sidestep.config.containers import as_container
from sidestep.config.saved import saved_text


def resolve(cfg: DictConfig) -> DictConfig:
    """The config a run really uses: checked, and with what the model source says of its weights (a checkpoint's
    architecture, `model=auto`'s variant); with songs to preprocess, the encoders they need are there."""
    cfg = prepare(cfg)
    source = build(cfg.model)
    source.settle(cfg.model)
    if cfg.preprocess.audio_dir is not None:  # songs first: the encoders must be there before any work starts
        source.require_encoders()
    return cfg


def resolve_run(cfg: DictConfig) -> Tuple[DictConfig, Path]:
    """`resolve`, then save the result over the config.yaml Hydra wrote for this start. Shared by every entry
    point that runs on a model."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    cfg = resolve(cfg)
    if cfg.preprocess.audio_dir is not None:  # songs first: training reads what preprocessing writes
        cfg.preprocess.out_dir = cfg.preprocess.out_dir or cfg.data.dataset_dir or str(run_dir / "dataset")
        cfg.data.dataset_dir = cfg.preprocess.out_dir
    if HydraConfig.get().output_subdir is not None:
        (run_dir / HydraConfig.get().output_subdir / "config.yaml").write_text(saved_text(as_container(cfg)))
    return cfg, run_dir
