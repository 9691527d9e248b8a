"""The frozen diffusion transformer that LoRA trains on: diffusers' `AceStepTransformer1DModel`.

Only the DiT is loaded for training, plus the `null_condition_emb` that CFG dropout swaps in: text, lyrics and
timbre were encoded once at preprocessing time (DESIGN §4).
"""

from dataclasses import dataclass

import torch
from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel
from omegaconf import DictConfig, OmegaConf

from sidestep.data.samples import SampleShape
from sidestep.errors import ConfigError


@dataclass
class DiT:
    transformer: AceStepTransformer1DModel
    null_condition_emb: torch.Tensor  # [1, 1, encoder_hidden_size]


def sample_shape(model_cfg: DictConfig) -> SampleShape:
    """The sample layout this model trains on (checked for every file before the model is built)."""
    arch = model_cfg.arch
    return SampleShape(
        latent_dim=arch.audio_acoustic_hidden_dim,
        context_dim=arch.in_channels - arch.audio_acoustic_hidden_dim,
        condition_dim=arch.encoder_hidden_size,
        min_frames=arch.patch_size,
    )


def build_dit(model_cfg: DictConfig, dtype: torch.dtype = torch.float32) -> DiT:
    """A frozen DiT in `dtype`: random weights from `model.init_seed` for `tiny`, else the checkpoint's."""
    if model_cfg.variant != "tiny":
        raise ConfigError(
            f"model={model_cfg.variant}: reading ACE-Step checkpoint folders is not available in this version yet; "
            "train the tiny model with experiment=demo")
    arch = OmegaConf.to_container(model_cfg.arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model_cfg.init_seed)
        transformer = AceStepTransformer1DModel(**arch, is_turbo=model_cfg.is_turbo)
        null = torch.randn(1, 1, arch["encoder_hidden_size"])
    transformer.requires_grad_(False)
    if dtype != torch.float32:
        transformer.to(dtype)
    return DiT(transformer, null.to(dtype))
