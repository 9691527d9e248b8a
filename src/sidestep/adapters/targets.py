"""Which DiT modules an adapter trains, and their names on both sides.

Settings and exported files name modules as the original ACE-Step checkpoint does (`self_attn.q_proj`); diffusers'
DiT, which PEFT wraps, calls the attention projections `to_q` ... `to_out.0`. The one table between the two is
`models.keymap.ATTENTION_RENAMES`; the MLP projections have the same name in both.
"""

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

from omegaconf import DictConfig

from sidestep.adapters.rank_map import read_rank_map
from sidestep.config.choices import ATTENTION_PROJECTIONS, AttentionBlock
from sidestep.models.keymap import ATTENTION_RENAMES, DECODER_PREFIX, diffusers_key_to_decoder

ADAPTED_MODULE = re.compile(
    r"(layers\.\d+\.(?:(?:" + "|".join(AttentionBlock) + r")\.(?:"
    + "|".join(re.escape(ATTENTION_RENAMES[p]) for p in ATTENTION_PROJECTIONS) + r")|mlp\.\w+_proj))\.(.+)")
Targets = Union[str, List[str]]  # PEFT's target_modules: a regex full-matched against module names, or names


@dataclass(frozen=True)
class AdapterSize:
    """What every adapter type shares, from `adapter.*` (a type without a rank or dropout gets 0), `attention=` and
    `adapter.rank_map`; each type maps it onto its own PEFT config fields."""

    rank: int
    alpha: float
    dropout: float
    bias: str
    targets: Targets  # diffusers module names
    rank_pattern: Dict[str, int] = field(default_factory=dict)  # module -> rank, from a rank map
    alpha_pattern: Dict[str, float] = field(default_factory=dict)


def adapter_size(adapter: DictConfig, attention: DictConfig, arch: Optional[DictConfig] = None) -> AdapterSize:
    """One rank for every target, or with `adapter.rank_map` the estimate's modules and per-module ranks (alpha keeps
    the configured alpha / rank)."""
    common = dict(rank=adapter.get("rank", 0), alpha=float(adapter.get("alpha") or 0.0),
                  dropout=adapter.get("dropout", 0.0), bias=str(adapter.get("bias", "none")))
    if adapter.get("rank_map") is None:
        return AdapterSize(**common, targets=target_pattern(adapter.target_modules, attention.blocks))
    plan = read_rank_map(adapter.rank_map, arch).trained
    ratio = adapter.alpha / adapter.rank
    return AdapterSize(**common, targets=sorted(plan), rank_pattern=dict(plan),
                       alpha_pattern={name: rank * ratio for name, rank in plan.items()})


def target_pattern(target_modules: List[str], blocks: List[str]) -> str:
    """A regex PEFT full-matches against diffusers module names, e.g. `layers.3.cross_attn.to_q`."""
    branches = []
    projections = [re.escape(ATTENTION_RENAMES[m]) for m in target_modules if m in ATTENTION_PROJECTIONS]
    if projections and blocks:
        branches.append(f"(?:{'|'.join(map(str, blocks))})\\.(?:{'|'.join(projections)})")
    mlp = [str(m) for m in target_modules if m not in ATTENTION_PROJECTIONS]
    if mlp:
        branches.append(f"mlp\\.(?:{'|'.join(mlp)})")
    return f"layers\\.\\d+\\.(?:{'|'.join(branches)})"


def split_key(key: str) -> Tuple[str, str]:
    """An adapter tensor's key as (the DiT module it belongs to, the adapter's own part), whatever the type:
    `layers.0.self_attn.to_out.0.lora_A.weight` -> (`layers.0.self_attn.to_out.0`, `lora_A.weight`)."""
    match = ADAPTED_MODULE.match(key)
    if match is None:
        raise ValueError(f"{key}: not an adapter tensor of a DiT projection")
    return match.group(1), match.group(2)


def original_module_name(module: str) -> str:
    """`layers.0.self_attn.to_out.0` -> `layers.0.self_attn.o_proj`."""
    return diffusers_key_to_decoder(module + ".weight")[len(DECODER_PREFIX):-len(".weight")]


def original_targets(targets: Targets) -> Targets:
    """The diffusers-name regex (or list) with attention projections in the original names."""
    if isinstance(targets, str):
        for old, new in ATTENTION_RENAMES.items():
            if old in ATTENTION_PROJECTIONS:
                targets = targets.replace(re.escape(new), old)
        return targets
    return sorted(original_module_name(m) for m in targets)


def original_pattern(pattern: Optional[dict]) -> dict:
    return {original_module_name(k): v for k, v in (pattern or {}).items()}
