"""LoKr (LyCORIS; Yeh et al. 2024): ΔW = (alpha / rank)·kron(w1, w2), each width split into two factors, w2 (and
with `decompose_both` w1) low-rank when the rank is below half its size. Far fewer parameters than LoRA at the same
rank. diffusers' `load_lora_adapter` loads it (it builds the PEFT config the file's header names), its pipeline's
`load_lora_weights` does not; ACE-Step (PEFT) and ComfyUI (LyCORIS keys) do."""

from typing import TYPE_CHECKING, Dict, Optional

import torch

from sidestep.adapters.kind import AdapterType, Weights
from sidestep.adapters.targets import AdapterSize, original_module_name, split_key
from sidestep.config.parts import LokrAdapterConfig

if TYPE_CHECKING:
    from peft import LoKrConfig

PARTS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")


class Lokr(LokrAdapterConfig, AdapterType):
    peft_type = "LOKR"
    formats = ("diffusers", "acestep", "comfyui")

    def peft_config(self, size: AdapterSize) -> "LoKrConfig":
        from peft import LoKrConfig

        return LoKrConfig(r=size.rank, alpha=size.alpha, rank_dropout=self.rank_dropout,
                          module_dropout=self.module_dropout, decompose_both=self.decompose_both,
                          decompose_factor=self.factor, target_modules=size.targets)

    @classmethod
    def from_peft(cls, config: "LoKrConfig") -> "Lokr":
        return cls(factor=config.decompose_factor, decompose_both=bool(config.decompose_both),
                   rank_dropout=config.rank_dropout, module_dropout=config.module_dropout)

    def inference_config(self, config: "LoKrConfig") -> "LoKrConfig":
        return type(config)(**{**config.to_dict(), "rank_dropout": 0.0, "module_dropout": 0.0})

    def describe(self, config: "LoKrConfig") -> Dict[str, object]:
        return {"rank": config.r, "alpha": float(config.alpha), "factor": config.decompose_factor,
                "decompose_both": bool(config.decompose_both), "rank_dropout": config.rank_dropout,
                "module_dropout": config.module_dropout}

    def comfyui_tensors(self, weights: Weights, config: "LoKrConfig", prefix: str,
                        model: Optional[torch.nn.Module]) -> Optional[Weights]:
        """LyCORIS keys, `<module>.lokr_w1` / `.lokr_w2` or their `_a`/`_b` factors. ComfyUI scales by
        `<module>.alpha` / rank only when a factor is low-rank, and not at all when both are full; then the scale
        alpha / rank is folded into `lokr_w1` instead, and no alpha is written."""
        modules: Dict[str, Dict[str, torch.Tensor]] = {}
        for key, tensor in weights.items():
            module, leaf = split_key(key)
            modules.setdefault(module, {})[leaf] = tensor
        out = {}
        for module, parts in modules.items():
            name = prefix + original_module_name(module)
            low_rank = "lokr_w1_a" in parts or "lokr_w2_a" in parts
            if not low_rank:
                parts = {**parts, "lokr_w1": parts["lokr_w1"] * (config.alpha / config.r)}
            out.update({f"{name}.{leaf}": parts[leaf] for leaf in PARTS if leaf in parts})
            if low_rank:
                out[f"{name}.alpha"] = torch.tensor(float(config.alpha))
        return out
