"""LoHa (LyCORIS; Hyeon-Woo et al. 2022): ΔW = (alpha / rank)·(w1a·w1b) ⊙ (w2a·w2b), a Hadamard product of two
rank-r updates (rank up to r², at twice LoRA's parameters). diffusers' LoRA loader cannot read it; ACE-Step (PEFT)
and ComfyUI (LyCORIS keys) can."""

from typing import TYPE_CHECKING, Dict, Optional

import torch

from sidestep.adapters.kind import AdapterType, Weights
from sidestep.adapters.targets import AdapterSize, original_module_name, split_key
from sidestep.config.parts import LohaAdapterConfig

if TYPE_CHECKING:
    from peft import LoHaConfig

FIRST = "hada_w1_a"


class Loha(LohaAdapterConfig, AdapterType):
    peft_type = "LOHA"
    formats = ("acestep", "comfyui")

    def peft_config(self, size: AdapterSize) -> "LoHaConfig":
        from peft import LoHaConfig

        return LoHaConfig(r=size.rank, alpha=size.alpha, rank_dropout=self.rank_dropout,
                          module_dropout=self.module_dropout, target_modules=size.targets)

    @classmethod
    def from_peft(cls, config: "LoHaConfig") -> "Loha":
        return cls(rank_dropout=config.rank_dropout, module_dropout=config.module_dropout)

    def inference_config(self, config: "LoHaConfig") -> "LoHaConfig":
        return type(config)(**{**config.to_dict(), "rank_dropout": 0.0, "module_dropout": 0.0})

    def describe(self, config: "LoHaConfig") -> Dict[str, object]:
        return {"rank": config.r, "alpha": float(config.alpha), "rank_dropout": config.rank_dropout,
                "module_dropout": config.module_dropout}

    def comfyui_tensors(self, weights: Weights, config: "LoHaConfig", prefix: str,
                        model: Optional[torch.nn.Module]) -> Optional[Weights]:
        """PEFT's names are LyCORIS's (`<module>.hada_w1_a` ...); ComfyUI scales by `<module>.alpha` / rank."""
        out = {}
        for key, tensor in weights.items():
            module, leaf = split_key(key)
            name = prefix + original_module_name(module)
            out[f"{name}.{leaf}"] = tensor
            if leaf == FIRST:
                out[f"{name}.alpha"] = torch.tensor(float(config.alpha))
        return out
