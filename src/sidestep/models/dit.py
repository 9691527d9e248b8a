"""The frozen diffusion transformer that adapters train on: diffusers' `AceStepTransformer1DModel`.

Only the DiT is loaded for training, plus the `null_condition_emb` that CFG dropout swaps in: text, lyrics and
timbre were encoded once at preprocessing time.
"""

from dataclasses import dataclass

import torch
from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel
from omegaconf import DictConfig, OmegaConf


@dataclass
class DiT:
    transformer: AceStepTransformer1DModel
    null_condition_emb: torch.Tensor  # [1, 1, encoder_hidden_size]


def dit_of_arch(model_cfg: DictConfig) -> AceStepTransformer1DModel:
    """A DiT of the configured shape on the current default device (freshly initialised; `meta`: no memory)."""
    return AceStepTransformer1DModel(**OmegaConf.to_container(model_cfg.arch, resolve=True), is_turbo=model_cfg.is_turbo)


def empty_dit(model_cfg: DictConfig) -> AceStepTransformer1DModel:
    """The DiT's modules without weights (meta device): for counting and for filling tensor by tensor."""
    with torch.device("meta"):
        return dit_of_arch(model_cfg)
