"""The frozen diffusion transformer that LoRA trains on: diffusers' `AceStepTransformer1DModel`.

Only the DiT is loaded for training, plus the `null_condition_emb` that CFG dropout swaps in: text, lyrics and
timbre were encoded once at preprocessing time (DESIGN §4).
"""

from dataclasses import dataclass

import torch
from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel
from omegaconf import DictConfig, OmegaConf

from sidestep.models.checkpoints import (
    assign_weights,
    locate,
    read_null_condition,
    read_weights,
    weight_files,
)


@dataclass
class DiT:
    transformer: AceStepTransformer1DModel
    null_condition_emb: torch.Tensor  # [1, 1, encoder_hidden_size]


def build_dit(model_cfg: DictConfig, dtype: torch.dtype = torch.float32) -> DiT:
    """A frozen DiT in `dtype`: random weights from `model.init_seed` for `tiny`, else the checkpoint's."""
    arch = OmegaConf.to_container(model_cfg.arch)
    if model_cfg.variant != "tiny":
        return _load_dit(model_cfg, arch, dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model_cfg.init_seed)
        transformer = AceStepTransformer1DModel(**arch, is_turbo=model_cfg.is_turbo)
        null = torch.randn(1, 1, arch["encoder_hidden_size"])
    transformer.requires_grad_(False)
    if dtype != torch.float32:
        transformer.to(dtype)
    return DiT(transformer, null.to(dtype))


def _load_dit(model_cfg: DictConfig, arch: dict, dtype: torch.dtype) -> DiT:
    """Original layout: built on the meta device and filled tensor by tensor, so RAM holds one copy of the weights."""
    folder = locate(model_cfg.checkpoint_dir, model_cfg.variant)
    if folder.layout == "diffusers":
        transformer = AceStepTransformer1DModel.from_pretrained(folder.path / "transformer", torch_dtype=dtype)
        null = read_null_condition(sorted((folder.path / "condition_encoder").glob("*.safetensors")), dtype)
    else:
        with torch.device("meta"):
            transformer = AceStepTransformer1DModel(**arch, is_turbo=model_cfg.is_turbo)
        assign_weights(transformer, read_weights(folder.path, dtype), folder.path)
        null = read_null_condition(weight_files(folder.path), dtype)
    transformer.requires_grad_(False)
    return DiT(transformer, null)
