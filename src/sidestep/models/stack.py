"""The models around the DiT that turn audio and text into its inputs, and its output back into audio:
the VAE (`AutoencoderOobleck`), the Qwen3 text encoder with its tokenizer, and the condition encoder.

Preprocessing and sampling build them through here, from the same `model=` config as training: random and
seeded for `tiny`, else from the user's ACE-Step `checkpoints/` folder. Each is built on its own, so a caller
can keep only one big model in memory at a time.
"""

import json
import logging
import warnings
from pathlib import Path
from typing import Dict, Tuple

import torch
from diffusers import AutoencoderOobleck
from diffusers.pipelines.ace_step import AceStepConditionEncoder
from omegaconf import DictConfig
from safetensors import safe_open
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from sidestep.errors import ConfigError
from sidestep.models import tiny
from sidestep.models.checkpoints import (
    SILENCE_FILE,
    TEXT_ENCODER_DIR,
    VAE_DIR,
    assign_weights,
    locate,
    read_config,
    read_null_condition,
    read_weights,
    shared_folder,
    weight_files,
)
from sidestep.models.keymap import encoder_keys

log = logging.getLogger(__name__)
# Condition-encoder settings that the weights' shapes cannot tell; read from the variant's config.json if there.
ENCODER_SETTINGS = ("rope_theta", "rms_norm_eps", "sliding_window")


def build_vae(model_cfg: DictConfig, dtype: torch.dtype = torch.float32) -> AutoencoderOobleck:
    # diffusers' Oobleck still uses torch's old weight_norm, which warns on every build
    warnings.filterwarnings("ignore", message=".*weight_norm.*is deprecated", category=FutureWarning)
    if model_cfg.variant == "tiny":
        vae = _cast(tiny.tiny_vae(model_cfg), dtype)
    else:
        folder = locate(model_cfg.checkpoint_dir, model_cfg.variant)
        vae = AutoencoderOobleck.from_pretrained(shared_folder(folder, VAE_DIR, "vae"), torch_dtype=dtype)
    return vae.eval().requires_grad_(False)


def build_text_encoder(model_cfg: DictConfig, dtype: torch.dtype = torch.float32
                       ) -> Tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    if model_cfg.variant == "tiny":
        model, tokenizer = _cast(tiny.tiny_text_encoder(model_cfg), dtype), tiny.tiny_tokenizer()
    else:
        folder = locate(model_cfg.checkpoint_dir, model_cfg.variant)
        if folder.layout == "diffusers":
            model_dir = shared_folder(folder, TEXT_ENCODER_DIR, "text_encoder")
            tokenizer_dir = shared_folder(folder, TEXT_ENCODER_DIR, "tokenizer")
        else:
            model_dir = tokenizer_dir = shared_folder(folder, TEXT_ENCODER_DIR, TEXT_ENCODER_DIR)
        model = AutoModel.from_pretrained(model_dir, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return model.eval().requires_grad_(False), tokenizer


def build_condition_encoder(model_cfg: DictConfig, dtype: torch.dtype = torch.float32) -> AceStepConditionEncoder:
    if model_cfg.variant == "tiny":
        encoder = _cast(tiny.tiny_condition_encoder(model_cfg), dtype)
    else:
        folder = locate(model_cfg.checkpoint_dir, model_cfg.variant)
        if folder.layout == "diffusers":
            encoder = AceStepConditionEncoder.from_pretrained(folder.path / "condition_encoder", torch_dtype=dtype)
        else:
            encoder = _load_original_encoder(folder.path, read_config(folder), dtype)
    return encoder.eval().requires_grad_(False)


def _cast(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    return model if dtype == torch.float32 else model.to(dtype)


def _load_original_encoder(folder: Path, config: dict, dtype: torch.dtype) -> AceStepConditionEncoder:
    """`encoder.*` of model.safetensors plus `null_condition_emb` and silence_latent.pt, on a model whose widths
    are read off the weights themselves (the checkpoint's config.json names them differently per release)."""
    files = weight_files(folder)
    shapes = _encoder_shapes(files)
    settings = {k: config[k] for k in ENCODER_SETTINGS if config.get(k) is not None}
    with torch.device("meta"):
        encoder = AceStepConditionEncoder(**_encoder_config(shapes, folder), **settings)
    weights = read_weights(folder, dtype, "encoder")
    weights["null_condition_emb"] = read_null_condition(files, dtype)
    weights["silence_latent"] = read_silence_latent(folder).to(dtype)
    assign_weights(encoder, weights, folder)
    return encoder


def read_silence_latent(folder: Path) -> torch.Tensor:
    """silence_latent.pt ([1, 64, T], a plain tensor: loaded with `weights_only=True`) as [1, T, 64]."""
    path = folder / SILENCE_FILE
    if not path.is_file():
        raise ConfigError(f"{folder}: no {SILENCE_FILE}; is the ACE-Step download complete?")
    try:
        silence = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle refusal, truncated zip: name the file either way
        raise ConfigError(f"{path}: unreadable ({type(err).__name__}); re-download it") from None
    if not isinstance(silence, torch.Tensor) or silence.ndim != 3:
        raise ConfigError(f"{path}: expected a [1, channels, frames] tensor")
    return silence.transpose(1, 2).contiguous()


def _encoder_shapes(files) -> Dict[str, Tuple[int, ...]]:
    shapes = {}
    for path in files:
        with safe_open(path, framework="pt") as f:
            for new, old in encoder_keys(f.keys()).items():
                shapes[new] = tuple(f.get_slice(old).get_shape())
    return shapes


def _encoder_config(shapes: Dict[str, Tuple[int, ...]], folder: Path) -> dict:
    try:
        hidden, text_dim = shapes["text_projector.weight"]
        head_dim = shapes["lyric_encoder.layers.0.self_attn.norm_q.weight"][0]
        return dict(
            hidden_size=hidden,
            text_hidden_dim=text_dim,
            timbre_hidden_dim=shapes["timbre_encoder.embed_tokens.weight"][1],
            intermediate_size=shapes["lyric_encoder.layers.0.mlp.gate_proj.weight"][0],
            head_dim=head_dim,
            num_attention_heads=shapes["lyric_encoder.layers.0.self_attn.to_q.weight"][0] // head_dim,
            num_key_value_heads=shapes["lyric_encoder.layers.0.self_attn.to_k.weight"][0] // head_dim,
            num_lyric_encoder_hidden_layers=_count_layers(shapes, "lyric_encoder"),
            num_timbre_encoder_hidden_layers=_count_layers(shapes, "timbre_encoder"),
        )
    except KeyError as err:
        raise ConfigError(f"{folder}: no condition encoder weights ({err.args[0]} missing under encoder.*); "
                          "is this an ACE-Step 1.5 checkpoint?") from None


def _count_layers(shapes: Dict[str, Tuple[int, ...]], prefix: str) -> int:
    return len({key.split(".")[2] for key in shapes if key.startswith(f"{prefix}.layers.")})


def describe(model_cfg: DictConfig) -> str:
    """A short identity of the weights, for the settings a preprocessed file records."""
    if model_cfg.variant == "tiny":
        return json.dumps({"tiny": model_cfg.init_seed}, sort_keys=True)
    folder = locate(model_cfg.checkpoint_dir, model_cfg.variant)
    return json.dumps({"checkpoint": str(folder.path), "variant": model_cfg.variant}, sort_keys=True)
