"""What `sidestep.sample` and `sidestep.export` are pointed at: a run dir, its `adapter/`, or one of its
`checkpoints/step-N/` (a run stopped before its adapter was written stands for its newest checkpoint). A folder
inside a run brings the run's saved config, which says the model and checkpoint the LoRA was trained on."""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from peft import PeftConfig
from safetensors import SafetensorError
from safetensors.torch import load_file

from sidestep.adapters.attach import adapter_config
from sidestep.adapters.files import WEIGHTS, read_adapter
from sidestep.config import typed
from sidestep.config.saved import load_saved
from sidestep.errors import ConfigError
from sidestep.training.checkpoint import LORA_FILE, STATE_FILE, complete_checkpoints, read_state

SAVED_CONFIG = Path(".hydra") / "config.yaml"


@dataclass
class Source:
    path: Path
    run_dir: Optional[Path]
    run_cfg: Optional[DictConfig]  # the run's saved, checked config
    weights: Dict[str, torch.Tensor]  # LoRA tensors under diffusers names
    adapter_config: PeftConfig
    weights_file: Path
    step: Optional[int] = None  # the step of a checkpoint or a kept step adapter; None for a finished adapter

    @property
    def name(self) -> str:
        """The run's name (`run.name`, or its folder for runs made before there was one), `-stepN` for a checkpoint."""
        run_name = OmegaConf.select(self.run_cfg, "run.name") if self.run_cfg is not None else None
        folder = self.run_dir or (self.path.parent if self.path.name == "adapter" else self.path)
        base = run_name or folder.name
        return base if self.step is None else f"{base}-step{self.step}"


def run_root(path: Path) -> Optional[Path]:
    """The run dir `path` is or lies in (the nearest folder up with a saved config), if any."""
    for folder in (path, *path.parents):
        if (folder / SAVED_CONFIG).is_file():
            return folder
    return None


def samples_dir(source: str) -> str:
    """Where samples go by default: `<run>/samples`, `<source>/samples` outside a run, or (for a source that does
    not exist, which is then refused) `outputs/samples`, so no folder is made inside a wrong path."""
    path = Path(source).expanduser().resolve()
    if not path.is_dir():
        return str(Path("outputs") / "samples")
    return str((run_root(path) or path) / "samples")


def full_precision_weights(source: Source) -> Dict[str, torch.Tensor]:
    """The source's LoRA tensors as they trained, in float32. A run's `adapter/` is written in `export.dtype` (bf16
    by default), but the run's newest checkpoint holds the same weights unrounded: it is taken when the adapter is
    exactly its tensors rounded (an adapter re-exported from another checkpoint is not). Else the source's own."""
    if source.step is not None or source.run_dir is None or not complete_checkpoints(source.run_dir):
        return source.weights
    try:
        full = load_file(complete_checkpoints(source.run_dir)[-1] / LORA_FILE)
    except (OSError, SafetensorError):
        return source.weights
    rounded = full.keys() == source.weights.keys() and all(
        torch.equal(full[k].to(v.dtype), v) for k, v in source.weights.items())
    return full if rounded else source.weights


def _kept_step(folder: Path, run_dir: Optional[Path]) -> Optional[int]:
    """The step of an adapter a run kept (`<run>/adapters/step-N/`, training/step_adapters.py), else None."""
    match = re.fullmatch(r"step-(\d+)", folder.name)
    return int(match.group(1)) if match and run_dir is not None and folder.parent == run_dir / "adapters" else None


def open_source(path: Path) -> Source:
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"source: {path} is not a folder; give a run dir, its adapter/ or a checkpoints/step-N/")
    run_dir = run_root(path)
    run_cfg = typed(load_saved(run_dir / SAVED_CONFIG)) if run_dir else None
    folder = path / "adapter" if path == run_dir else path
    if path == run_dir and not (folder / "adapter_config.json").is_file() and complete_checkpoints(run_dir):
        folder = complete_checkpoints(run_dir)[-1]
    if (folder / "adapter_config.json").is_file():
        weights, config = read_adapter(folder)
        return Source(path, run_dir, run_cfg, weights, config, folder / WEIGHTS, _kept_step(folder, run_dir))
    if (folder / STATE_FILE).is_file() and (folder / LORA_FILE).is_file():
        if run_cfg is None:
            raise ConfigError(f"source: {path} is a checkpoint outside its run dir; its LoRA settings are in the run's "
                              ".hydra/config.yaml, so point at the checkpoint inside the run")
        config = adapter_config(run_cfg)
        step = read_state(folder)["state"]["step"]
        return Source(path, run_dir, run_cfg, load_file(folder / LORA_FILE), config, folder / LORA_FILE, step)
    if path == run_dir:
        raise ConfigError(f"source: {path} has no adapter/ and no complete checkpoint yet (the run stopped before "
                          "its first one)")
    raise ConfigError(f"source: {path} holds no adapter (adapter_config.json) or checkpoint ({STATE_FILE}); give a "
                      "run dir, its adapter/ or a checkpoints/step-N/")
