"""The parts of a run, each built once from its config group while the run is set up, then handed to what uses
it (as torchtune's `_setup_*` methods do): nothing below the set-up builds a part from the config again."""

from dataclasses import dataclass
from typing import Any, Callable

from omegaconf import DictConfig
from peft import PeftConfig

from sidestep.adapters.attach import adapter_config, adapter_type
from sidestep.adapters.kind import AdapterType
from sidestep.config.build import build
from sidestep.models.source import ModelSource


@dataclass(frozen=True)
class RunParts:
    model: ModelSource  # where the weights come from (`model=`), already settled on the config
    adapter: AdapterType  # `adapter=`
    adapter_config: PeftConfig  # what `adapter=` (its type, knobs, `adapter.rank_map`) and `attention=` describe
    data: Any  # where the samples come from (`data._target_`: a `folder(shape)` of samples)
    optimizer: Callable[..., Any]  # `optimizer=`: called with the trainable parameters (and `fused`), gives the optimizer
    schedule: Callable[..., Callable[[int], float]]  # `scheduler=`: called with `total_steps`, gives the LR multiplier


def build_parts(cfg: DictConfig, model: ModelSource) -> RunParts:
    """Every part `cfg` names, `model` being the source the config was settled with."""
    adapter = adapter_type(cfg)
    return RunParts(
        model=model,
        adapter=adapter,
        adapter_config=adapter_config(cfg, adapter),
        data=build(cfg.data),
        optimizer=build(cfg.optimizer),
        schedule=build(cfg.scheduler),
    )
