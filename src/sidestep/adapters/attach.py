"""Putting the configured adapter on the frozen DiT, counting what it trains, and writing it out."""

from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch
from omegaconf import DictConfig
from peft import PeftConfig, get_peft_model_state_dict, set_peft_model_state_dict

from sidestep.adapters.files import Weights, write_formats
from sidestep.adapters.kind import AdapterType, kind_of
from sidestep.adapters.targets import adapter_size
from sidestep.atomic import atomic_dir
from sidestep.config.build import build
from sidestep.errors import SidestepError
from sidestep.models.dit import empty_dit
from sidestep.models.source import ModelSource


def adapter_type(cfg: DictConfig) -> AdapterType:
    return build(cfg.adapter)


def adapter_config(cfg: DictConfig, adapter: Optional[AdapterType] = None) -> PeftConfig:
    """The PEFT config `adapter=` (its type and knobs, `adapter.rank_map`) and `attention=` describe together;
    `adapter`: the type when the caller has built it already (`adapter_type`)."""
    return (adapter or adapter_type(cfg)).peft_config(adapter_size(cfg.adapter, cfg.attention, cfg.model.arch))


def add_adapter(transformer: torch.nn.Module, config: PeftConfig, seed: int) -> None:
    """Attach a trainable fp32 adapter to the frozen transformer; its initial weights depend only on `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer.add_adapter(config)
    for param in transformer.parameters():
        if param.requires_grad:
            param.data = param.data.float()


def trainable_parameters(model_cfg: DictConfig, config: PeftConfig) -> int:
    """What the adapter `config` trains, counted by PEFT on a weightless (meta-device) copy of the DiT: right for
    every type, rank map and bias setting, and instant at full size."""
    transformer = empty_dit(model_cfg)
    transformer.add_adapter(config)
    return sum(p.numel() for p in transformer.parameters() if p.requires_grad)


def save_adapter(transformer: torch.nn.Module, target: Path, name: str, dtype: str = "fp32",
                 facts: Optional[Dict[str, str]] = None, samples: Sequence[Tuple[str, str]] = ()) -> None:
    """Write `target/` with the adapter in every format its type loads in (see files), all or nothing; `name`
    names the ComfyUI file and the ACE-Step adapter, `dtype` the exported tensors; `facts` and `samples` go into
    the headers and the model card (`write_formats`)."""
    config = transformer.peft_config["default"]
    weights = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in get_peft_model_state_dict(transformer).items()}
    with atomic_dir(target) as tmp:
        write_formats(weights, config, tmp, name, dtype, model=transformer, facts=facts, samples=samples)


def adapted_dit(source: ModelSource, weights: Weights, config: PeftConfig) -> torch.nn.Module:
    """The base DiT with a saved adapter on it, at inference settings: what `export` computes a ComfyUI file from
    when the type's file depends on the base weights (DoRA, OFT)."""
    transformer = source.dit().transformer
    transformer.add_adapter(kind_of(config).inference_config(config))
    if set_peft_model_state_dict(transformer, weights).unexpected_keys:
        raise SidestepError("the adapter does not fit the model its run was trained on")
    return transformer.eval()
