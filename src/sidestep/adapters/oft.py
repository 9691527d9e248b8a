"""OFT (Qiu et al. 2023; PEFT's 2025 rework): each target's input features are rotated in blocks of `block_size`
by a learned orthogonal matrix (Cayley transform of a skew-symmetric one), W' = W·Rᵀ. It keeps the angles between
the base model's neurons, so it drifts less at high learning rates. diffusers' LoRA loader cannot read it."""

from typing import TYPE_CHECKING, Dict, Optional

import torch

from sidestep.adapters.kind import AdapterType, Weights, adapted_layers, base_weight
from sidestep.adapters.targets import AdapterSize, original_module_name
from sidestep.config.parts import OftAdapterConfig

if TYPE_CHECKING:
    from peft import OFTConfig

ADAPTER = "default"


class Oft(OftAdapterConfig, AdapterType):
    peft_type = "OFT"
    formats = ("acestep", "comfyui")

    def peft_config(self, size: AdapterSize) -> "OFTConfig":
        from peft import OFTConfig

        return OFTConfig(r=0, oft_block_size=self.block_size, module_dropout=self.module_dropout,
                         use_cayley_neumann=self.use_cayley_neumann, target_modules=size.targets)

    @classmethod
    def from_peft(cls, config: "OFTConfig") -> "Oft":
        return cls(block_size=config.oft_block_size, module_dropout=config.module_dropout,
                   use_cayley_neumann=bool(config.use_cayley_neumann))

    def inference_config(self, config: "OFTConfig") -> "OFTConfig":
        return type(config)(**{**config.to_dict(), "module_dropout": 0.0})

    def describe(self, config: "OFTConfig") -> Dict[str, object]:
        return {"block_size": config.oft_block_size, "module_dropout": config.module_dropout,
                "use_cayley_neumann": bool(config.use_cayley_neumann)}

    def needs_model(self, config: "OFTConfig") -> bool:
        return True

    def comfyui_tensors(self, weights: Weights, config: "OFTConfig", prefix: str,
                        model: Optional[torch.nn.Module]) -> Optional[Weights]:
        """ComfyUI's OFT (`oft_blocks`) rotates a weight's output rows; PEFT's rotates its input columns, which
        no ComfyUI adapter expresses. So the file holds each target's full weight difference W·Rᵀ − W under
        `<module>.diff`, which ComfyUI adds as it is: exact, but as large as the targeted weights."""
        if model is None:
            return None
        out = {}
        for module, layer in adapted_layers(model).items():
            weight = base_weight(layer)
            rotation = layer.get_delta_weight(ADAPTER).detach().to(torch.float32)
            out[f"{prefix}{original_module_name(module)}.diff"] = weight @ rotation.T - weight
        return out
