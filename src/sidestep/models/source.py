"""Where the weights of `model=` come from. `model._target_` names a `ModelSource` class and `model_source`
builds it from the whole `model` node; nothing is loaded until a part is asked for, and each part is built on its
own, so a caller keeps only the big models it needs in memory."""

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

import torch
from diffusers import AutoencoderOobleck
from diffusers.pipelines.ace_step import AceStepConditionEncoder
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sidestep.config.build import build
from sidestep.config.choices import Quantize
from sidestep.library_output import route_model_libraries
from sidestep.models.checkpoints import check_fit, weight_shapes
from sidestep.models.dit import DiT, empty_dit
from sidestep.models.quantize import make_quantizable, place_weights

route_model_libraries()  # no progress bars, and their warnings in our log (see library_output)


class ModelSource(ABC):
    def __init__(self, **model):
        target = f"{type(self).__module__}.{type(self).__qualname__}"
        self.cfg: DictConfig = OmegaConf.create({"_target_": target, **model})  # the resolved `model` node

    def settle(self, model_cfg: DictConfig) -> None:
        """Write into `model_cfg` (and this source) what the weights themselves say: the architecture, the variant
        `auto` picks. Random weights say nothing the config did not."""

    def require_encoders(self) -> None:
        """Raise a `ConfigError` naming what preprocessing needs and the weights lack (the VAE, the text encoder),
        before any work is announced. Random weights lack nothing."""

    def dit(self, dtype: torch.dtype = torch.float32, device: Optional[torch.device] = None) -> DiT:
        """The frozen DiT and the null condition CFG dropout swaps in. The DiT is built weightless and filled one
        tensor at a time, so memory never holds a second copy; with `model.quantize` its block linears are
        bitsandbytes layers, each quantized on `device` (default: the CPU) as its tensor arrives."""
        transformer = empty_dit(self.cfg)
        expected = weight_shapes(transformer)
        if self.cfg.get("quantize") is not None:
            make_quantizable(transformer, Quantize(self.cfg.quantize), dtype)
        arrived = place_weights(transformer, self._dit_tensors(dtype), torch.device(device or "cpu"))
        check_fit(expected, arrived, self._weights_location())
        return DiT(transformer.requires_grad_(False), self._null_condition(dtype))

    @abstractmethod
    def _dit_tensors(self, dtype: torch.dtype) -> Iterator[Tuple[str, torch.Tensor]]:
        """The DiT's tensors under diffusers names, in `dtype`, one at a time."""

    @abstractmethod
    def _null_condition(self, dtype: torch.dtype) -> torch.Tensor: ...

    @abstractmethod
    def _weights_location(self) -> str:
        """Where the DiT's weights come from, for an error that says they do not fit."""

    @abstractmethod
    def _vae(self, dtype: torch.dtype) -> AutoencoderOobleck: ...

    @abstractmethod
    def _text_encoder(self, dtype: torch.dtype) -> Tuple[PreTrainedModel, PreTrainedTokenizerBase]: ...

    @abstractmethod
    def _condition_encoder(self, dtype: torch.dtype) -> AceStepConditionEncoder: ...

    @abstractmethod
    def helper_parameters(self) -> Dict[str, int]:
        """The sampling helpers' sizes (`vae`, `text_encoder`, `condition_encoder`: parameters and buffers) as these
        weights hold them, read without loading any; one that is missing is left out."""

    @abstractmethod
    def identity(self) -> str:
        """A short identity of the weights, for the settings a preprocessed file records."""

    @abstractmethod
    def weights_digest(self) -> str:
        """What a resumed run compares to know the frozen base did not change."""

    @abstractmethod
    def original_folder(self, scratch: Path) -> Path:
        """An original-layout ACE-Step variant folder of these weights, for `export --merge` to copy and fold into."""

    def vae(self, dtype: torch.dtype = torch.float32) -> AutoencoderOobleck:
        return _frozen(self._vae(dtype), dtype)

    def text_encoder(self, dtype: torch.dtype = torch.float32) -> Tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        model, tokenizer = self._text_encoder(dtype)
        return _frozen(model, dtype), tokenizer

    def condition_encoder(self, dtype: torch.dtype = torch.float32) -> AceStepConditionEncoder:
        return _frozen(self._condition_encoder(dtype), dtype)


def _frozen(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    if any(p.dtype != dtype for p in model.parameters()):
        model = model.to(dtype)
    return model.eval().requires_grad_(False)


def model_source(model_cfg: DictConfig) -> ModelSource:
    """The source `model._target_` names, built from the model node (with its interpolations resolved)."""
    return build(model_cfg)
