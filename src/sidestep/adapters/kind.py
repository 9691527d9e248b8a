"""What an adapter type is to the rest of Side-Step: `adapter=<type>` builds one (`instantiate(cfg.adapter)`),
and a saved adapter's PEFT config names it again (`kind_of`). A new type is three files: its schema in
`config/parts.py` (ADAPTER_SCHEMAS: its knobs, its checks and the facts read without torch), its YAML in
`conf/adapter/`, and its module here, a class that subclasses both its schema and `AdapterType` (what needs PEFT)."""

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Dict, Optional, Tuple

import torch
from hydra.utils import get_class

from sidestep.adapters.targets import AdapterSize
from sidestep.config.parts import ADAPTER_SCHEMAS
from sidestep.errors import ConfigError

if TYPE_CHECKING:  # PEFT is imported where an adapter is built, not where its settings are checked
    from peft import PeftConfig
    from peft.tuners.tuners_utils import BaseTunerLayer

Weights = Dict[str, torch.Tensor]


class AdapterType(ABC):
    """What a type does with PEFT; its knobs and torch-free facts (`label`, `scalable`, `check` ...) come from its
    schema, the other base of each type's class."""

    peft_type: ClassVar[str]  # PEFT's name for the type (`PeftConfig.peft_type`)
    formats: ClassVar[Tuple[str, ...]]  # the consumer formats (`files.FORMATS`) that load this type correctly

    @abstractmethod
    def peft_config(self, size: AdapterSize) -> "PeftConfig":
        """The PEFT config that trains this type at `size` (diffusers module names)."""

    @classmethod
    @abstractmethod
    def from_peft(cls, config: "PeftConfig") -> "AdapterType":
        """The type a saved config describes (its own settings read back from it)."""

    @abstractmethod
    def inference_config(self, config: "PeftConfig") -> "PeftConfig":
        """`config` as every exported file states it: dropout off (diffusers never calls `.eval()`)."""

    @abstractmethod
    def describe(self, config: "PeftConfig") -> Dict[str, object]:
        """Rank, alpha and what else a person or a LoRA manager reads from a file's header."""

    @abstractmethod
    def comfyui_tensors(self, weights: Weights, config: "PeftConfig", prefix: str,
                        model: Optional[torch.nn.Module]) -> Optional[Weights]:
        """The tensors of ComfyUI's single-file format, under `prefix` + original module names. `model` is a DiT
        carrying this adapter (or None); a type whose file depends on the base weights returns None without it."""

    def needs_model(self, config: "PeftConfig") -> bool:
        """Whether `comfyui_tensors` needs the DiT with the adapter (its base weights), not just the tensors."""
        return False


def adapted_layers(model: torch.nn.Module) -> Dict[str, "BaseTunerLayer"]:
    """The DiT's adapted modules by diffusers name (`layers.0.self_attn.to_q`)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {name: module for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)}


def base_weight(layer: "BaseTunerLayer") -> torch.Tensor:
    return layer.get_base_layer().weight.detach().to(torch.float32)


def kind_of(config: "PeftConfig") -> AdapterType:
    """The adapter type of a saved PEFT config, among the types `adapter=` offers."""
    for schema in ADAPTER_SCHEMAS.values():
        kind = get_class(schema._target_)
        if kind.peft_type == config.peft_type:
            return kind.from_peft(config)
    raise ConfigError(f"adapter: Side-Step cannot export or sample a {config.peft_type} adapter")
