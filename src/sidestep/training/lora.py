"""Which DiT modules get LoRA, how it is attached (PEFT), and how the trained adapter is written.

Config names follow the original ACE-Step checkpoint (`q_proj`, `o_proj`, ...); diffusers names the same
attention projections `to_q`, `to_out.0` (DESIGN §3). The MLP projections have the same name in both.
"""

import re
from pathlib import Path
from typing import Dict, Optional

import torch
from omegaconf import DictConfig
from peft import LoraConfig, get_peft_model_state_dict

from sidestep.atomic import atomic_dir
from sidestep.training.adapter_files import write_formats
from sidestep.training.rank_map import read_rank_map

DIFFUSERS_ATTENTION_NAMES = {"q_proj": "to_q", "k_proj": "to_k", "v_proj": "to_v", "o_proj": "to_out.0"}
LAYER_INDEX = re.compile(r"layers\.(\d+)\.")


def target_pattern(lora: DictConfig, attention: DictConfig) -> str:
    """A regex PEFT full-matches against diffusers module names, e.g. `layers.3.cross_attn.to_q`."""
    branches = []
    projections = [re.escape(DIFFUSERS_ATTENTION_NAMES[m]) for m in lora.target_modules if m in DIFFUSERS_ATTENTION_NAMES]
    if projections and attention.blocks:
        branches.append(f"(?:{'|'.join(attention.blocks)})\\.(?:{'|'.join(projections)})")
    mlp = [m for m in lora.target_modules if m not in DIFFUSERS_ATTENTION_NAMES]
    if mlp:
        branches.append(f"mlp\\.(?:{'|'.join(mlp)})")
    return f"layers\\.\\d+\\.(?:{'|'.join(branches)})"


def peft_config(lora: DictConfig, attention: DictConfig, arch: Optional[DictConfig] = None) -> LoraConfig:
    """One rank for every target, or with `lora.rank_map` the estimate's modules and per-module ranks
    (PEFT's rank_pattern / alpha_pattern, keeping alpha / rank as configured)."""
    common = dict(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias=lora.bias)
    if lora.rank_map is None:
        return LoraConfig(**common, target_modules=target_pattern(lora, attention))
    plan = read_rank_map(lora.rank_map, arch).trained
    ratio = lora.alpha / lora.rank
    return LoraConfig(**common, target_modules=sorted(plan), rank_pattern=dict(plan),
                      alpha_pattern={name: rank * ratio for name, rank in plan.items()})


def add_lora(transformer: torch.nn.Module, lora: DictConfig, attention: DictConfig, seed: int,
             arch: Optional[DictConfig] = None) -> None:
    """Attach a trainable fp32 adapter to the frozen transformer; its initial weights depend only on `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer.add_adapter(peft_config(lora, attention, arch))
    for param in transformer.parameters():
        if param.requires_grad:
            param.data = param.data.float()


def lora_parameter_count(arch: DictConfig, lora: DictConfig, attention: DictConfig) -> int:
    """Trainable parameters, from the architecture alone (for the summary shown before the model loads)."""
    if lora.rank_map is not None:
        return read_rank_map(lora.rank_map, arch).parameter_count()
    q_out = arch.num_attention_heads * arch.head_dim
    kv_out = arch.num_key_value_heads * arch.head_dim
    h, ff = arch.hidden_size, arch.intermediate_size
    shapes = {"q_proj": (h, q_out), "k_proj": (h, kv_out), "v_proj": (h, kv_out), "o_proj": (q_out, h),
              "gate_proj": (h, ff), "up_proj": (h, ff), "down_proj": (ff, h)}
    per_layer = 0
    for module in lora.target_modules:
        copies = len(attention.blocks) if module in DIFFUSERS_ATTENTION_NAMES else 1
        per_layer += copies * lora.rank * sum(shapes[module])
    return per_layer * arch.num_hidden_layers


def layer_grad_norms(transformer: torch.nn.Module) -> Dict[int, float]:
    """L2 norm of the LoRA gradients of each transformer layer."""
    squares: Dict[int, torch.Tensor] = {}
    for name, param in transformer.named_parameters():
        if param.grad is None:
            continue
        match = LAYER_INDEX.search(name)
        if match:
            layer = int(match.group(1))
            squares[layer] = squares.get(layer, 0.0) + param.grad.detach().float().pow(2).sum()
    return {layer: float(total.sqrt()) for layer, total in sorted(squares.items())}


def save_adapter(transformer: torch.nn.Module, target: Path, name: str, dtype: str = "fp32") -> None:
    """Write `target/` with the adapter in every format (see adapter_files), all or nothing; `name` names the
    ComfyUI file and the ACE-Step adapter, `dtype` the exported tensors."""
    config = transformer.peft_config["default"]
    weights = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in get_peft_model_state_dict(transformer).items()}
    with atomic_dir(target) as tmp:
        write_formats(weights, config, tmp, name, dtype)
