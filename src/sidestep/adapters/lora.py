"""LoRA (Hu et al. 2021): W + (alpha / rank)·B·A on each target, B starting at zero; `use_rslora` scales by
alpha / sqrt(rank) instead (Kalajdzievski 2023). Every consumer loads it."""

from dataclasses import dataclass
from typing import Dict

import torch
from peft import LoraConfig
from peft.utils.other import get_pattern_key

from sidestep.adapters.kind import AdapterType, Weights
from sidestep.adapters.targets import AdapterSize, original_module_name

PEFT_SUFFIX = ".lora_A.weight"


@dataclass
class Lora(AdapterType):
    use_rslora: bool = False

    peft_type = "LORA"
    formats = ("diffusers", "diffusers_pipeline", "acestep", "comfyui")
    takes_rank_map = True
    on_quantized_base = True

    def peft_config(self, size: AdapterSize) -> LoraConfig:
        return LoraConfig(r=size.rank, lora_alpha=size.alpha, lora_dropout=size.dropout, bias=size.bias,
                          target_modules=size.targets, rank_pattern=dict(size.rank_pattern),
                          alpha_pattern=dict(size.alpha_pattern), use_rslora=self.use_rslora)

    @classmethod
    def from_peft(cls, config: LoraConfig) -> "Lora":
        return cls(use_rslora=bool(config.use_rslora))

    def inference_config(self, config: LoraConfig) -> LoraConfig:
        return LoraConfig(**{**config.to_dict(), "lora_dropout": 0.0})

    def describe(self, config: LoraConfig) -> Dict[str, object]:
        return {"rank": config.r, "alpha": float(config.lora_alpha), "lora_dropout": config.lora_dropout,
                "use_rslora": bool(config.use_rslora)}

    def comfyui_tensors(self, weights: Weights, config: LoraConfig, prefix: str) -> Weights:
        """`<module>.lora_down/lora_up.weight` plus a `<module>.alpha` tensor: ComfyUI reads alpha only from there
        (without it an alpha = 2 x rank adapter loads at half strength), and scales by alpha / rank itself, so an
        rsLoRA adapter's alpha is stated as the one that gives the same scale."""
        out = {}
        for key, down in weights.items():
            if not key.endswith(PEFT_SUFFIX):
                continue
            module = key[: -len(PEFT_SUFFIX)]
            name = prefix + original_module_name(module)
            rank = down.shape[0]
            alpha = config.alpha_pattern.get(get_pattern_key(config.alpha_pattern.keys(), module), config.lora_alpha)
            out[f"{name}.lora_down.weight"] = down
            out[f"{name}.lora_up.weight"] = weights[f"{module}.lora_B.weight"]
            out[f"{name}.alpha"] = torch.tensor(float(alpha) * (rank ** 0.5 if config.use_rslora else 1.0))
        return out
