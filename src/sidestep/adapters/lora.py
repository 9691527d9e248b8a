"""LoRA (Hu et al. 2021): W + (alpha / rank)·B·A on each target, B starting at zero; `use_rslora` scales by
alpha / sqrt(rank) instead (Kalajdzievski 2023). DoRA (Liu et al. 2024, `adapter=dora`) is the same with each output
row's magnitude trained too. Every consumer loads both."""

from typing import TYPE_CHECKING, Dict, Optional

import torch

from sidestep.adapters.kind import AdapterType, Weights, adapted_layers, base_weight
from sidestep.adapters.targets import AdapterSize, original_module_name
from sidestep.config.parts import LoraAdapterConfig

if TYPE_CHECKING:
    from peft import LoraConfig

PEFT_SUFFIX = ".lora_A.weight"
ADAPTER = "default"


class Lora(LoraAdapterConfig, AdapterType):
    peft_type = "LORA"
    formats = ("diffusers", "diffusers_pipeline", "acestep", "comfyui")

    def peft_config(self, size: AdapterSize) -> "LoraConfig":
        from peft import LoraConfig

        return LoraConfig(r=size.rank, lora_alpha=size.alpha, lora_dropout=size.dropout, bias=size.bias,
                          target_modules=size.targets, rank_pattern=dict(size.rank_pattern),
                          alpha_pattern=dict(size.alpha_pattern), use_rslora=self.use_rslora, use_dora=self.use_dora)

    @classmethod
    def from_peft(cls, config: "LoraConfig") -> "Lora":
        return cls(use_rslora=bool(config.use_rslora), use_dora=bool(config.use_dora))

    def inference_config(self, config: "LoraConfig") -> "LoraConfig":
        return type(config)(**{**config.to_dict(), "lora_dropout": 0.0})

    def describe(self, config: "LoraConfig") -> Dict[str, object]:
        return {"rank": config.r, "alpha": float(config.lora_alpha), "lora_dropout": config.lora_dropout,
                "use_rslora": bool(config.use_rslora), "use_dora": bool(config.use_dora)}

    def needs_model(self, config: "LoraConfig") -> bool:
        return bool(config.use_dora)

    def comfyui_tensors(self, weights: Weights, config: "LoraConfig", prefix: str,
                        model: Optional[torch.nn.Module]) -> Optional[Weights]:
        """`<module>.lora_down/lora_up.weight` plus a `<module>.alpha` tensor: ComfyUI reads alpha only from there
        (without it an alpha = 2 x rank adapter loads at half strength), and scales by alpha / rank itself, so an
        rsLoRA adapter's alpha is stated as the one that gives the same scale. DoRA adds `<module>.dora_scale`."""
        from peft.utils.other import get_pattern_key

        if config.use_dora and model is None:
            return None
        layers = adapted_layers(model) if config.use_dora else {}
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
            if config.use_dora:
                out[f"{name}.dora_scale"] = comfyui_dora_scale(layers[module])
        return out


def comfyui_dora_scale(layer) -> torch.Tensor:
    """PEFT's DoRA weight is (W + ΔW) · m / ‖W + ΔW‖ per output row. ComfyUI (comfy/weight_adapter/base.py,
    `weight_decompose`) takes a `dora_scale` of shape [out, 1] as the output-axis case and computes
    (W + ΔW) · dora_scale / (‖W‖ + eps), with the base weight's row norms, in float32. So the scale that gives PEFT's
    weight there is m · (‖W‖ + eps) / ‖W + ΔW‖: it depends on the base model, which is why DoRA needs it to export."""
    weight = base_weight(layer)
    magnitude = layer.lora_magnitude_vector[ADAPTER].weight.detach().to(torch.float32)
    combined = weight + layer.get_delta_weight(ADAPTER).detach().to(torch.float32)
    eps = torch.finfo(torch.float32).eps
    return (magnitude * (weight.norm(dim=1) + eps) / combined.norm(dim=1)).unsqueeze(1)
