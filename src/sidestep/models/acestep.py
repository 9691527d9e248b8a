"""`model=turbo|base|sft|auto`: the weights of a user's ACE-Step checkpoint folder (see `checkpoints` for the
layouts accepted), found once when the source is built and loaded tensor by tensor, so RAM never holds a second
copy of a model."""

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Dict, Iterator, Tuple

import torch
from diffusers import AutoencoderOobleck
from diffusers.pipelines.ace_step import AceStepConditionEncoder
from omegaconf import DictConfig
from safetensors import safe_open
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from sidestep.errors import ConfigError, SidestepError
from sidestep.models.checkpoints import (
    INDEX_FILE,
    SILENCE_FILE,
    SINGLE_FILE,
    TEXT_ENCODER_DIR,
    VAE_DIR,
    assign_weights,
    decoder_arch,
    find_variants,
    iter_diffusers_weights,
    iter_weights,
    locate,
    pick_variant,
    read_config,
    read_null_condition,
    read_weights,
    shared_folder,
    weight_files,
)
from sidestep.models.keymap import encoder_keys
from sidestep.models.source import ModelSource

log = logging.getLogger(__name__)
CHECKPOINT_OWNED = ("is_turbo", "timestep_mu", "timestep_sigma")  # training constants the checkpoint decides
# Condition-encoder settings that the weights' shapes cannot tell; read from the variant's config.json if there.
ENCODER_SETTINGS = ("rope_theta", "rms_norm_eps", "sliding_window")
WEIGHT_PROBES = 64  # evenly spaced 64 KiB reads of each weight file: any other weights differ in them


class AceStepCheckpoint(ModelSource):
    def __init__(self, **model):
        super().__init__(**model)
        root = self.cfg.checkpoint_dir
        if root is None:
            raise ConfigError(f"model.checkpoint_dir: is not set; point it at your ACE-Step checkpoints/ folder for "
                              f"model={self.cfg.variant}, or try experiment=demo")
        if not Path(root).is_dir():
            raise ConfigError(f"model.checkpoint_dir: {root} does not exist; point it at your ACE-Step checkpoints/ "
                              "folder, or try experiment=demo")
        if self.cfg.variant == "auto":
            self.cfg.variant = pick_variant(root)
            log.info("model=auto: training %s (found: %s)", self.cfg.variant,
                     ", ".join(find_variants(root)) or self.cfg.variant)
        self.folder = locate(root, self.cfg.variant)

    def settle(self, model_cfg: DictConfig) -> None:
        """The checkpoint decides architecture and training constants: its config.json, and the weight shapes for
        what that lacks (the original's has no `encoder_hidden_size`); logged where it overrules the YAML."""
        found = {k: (v, "config.json") for k, v in read_config(self.folder).items() if v is not None}
        if self.folder.layout == "original" and any((self.folder.path / n).is_file() for n in (SINGLE_FILE, INDEX_FILE)):
            shapes = decoder_arch(weight_files(self.folder.path))  # no weights yet: loading them later says so
            found = {**{k: (v, "weights") for k, v in shapes.items()}, **found}
        for key in list(self.cfg.arch.keys()):
            _take(self.cfg.arch, key, found, f"model.arch.{key}")
        for key in CHECKPOINT_OWNED:
            _take(self.cfg, key, found, f"model.{key}")
        model_cfg.merge_with(self.cfg)

    def _dit_tensors(self, dtype: torch.dtype) -> Iterator[Tuple[str, torch.Tensor]]:
        if self.folder.layout == "diffusers":
            return iter_diffusers_weights(self.folder.path / "transformer", dtype)
        return iter_weights(self.folder.path, dtype)

    def _null_condition(self, dtype: torch.dtype) -> torch.Tensor:
        path = self.folder.path
        files = sorted((path / "condition_encoder").glob("*.safetensors")) if self.folder.layout == "diffusers" \
            else weight_files(path)
        return read_null_condition(files, dtype)

    def _weights_location(self) -> str:
        return str(self.folder.path / "transformer" if self.folder.layout == "diffusers" else self.folder.path)

    def require_encoders(self) -> None:
        self._vae_folder()
        self._text_encoder_folders()

    def _vae_folder(self) -> Path:
        return shared_folder(self.folder, VAE_DIR, "vae")

    def _text_encoder_folders(self) -> Tuple[Path, Path]:
        """(the model's folder, the tokenizer's)."""
        if self.folder.layout == "diffusers":
            return (shared_folder(self.folder, TEXT_ENCODER_DIR, "text_encoder"),
                    shared_folder(self.folder, TEXT_ENCODER_DIR, "tokenizer"))
        model_dir = shared_folder(self.folder, TEXT_ENCODER_DIR, TEXT_ENCODER_DIR)
        return model_dir, model_dir

    def _vae(self, dtype: torch.dtype) -> AutoencoderOobleck:
        return AutoencoderOobleck.from_pretrained(self._vae_folder(), torch_dtype=dtype, use_safetensors=True)

    def _text_encoder(self, dtype: torch.dtype) -> Tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        model_dir, tokenizer_dir = self._text_encoder_folders()
        return (AutoModel.from_pretrained(model_dir, dtype=dtype, trust_remote_code=False,  # never a folder's .py
                                          use_safetensors=True),  # nor a pickle
                AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=False))

    def _condition_encoder(self, dtype: torch.dtype) -> AceStepConditionEncoder:
        if self.folder.layout == "diffusers":
            return AceStepConditionEncoder.from_pretrained(self.folder.path / "condition_encoder", torch_dtype=dtype,
                                                           use_safetensors=True)
        return _load_original_encoder(self.folder.path, read_config(self.folder), dtype)

    def helper_parameters(self) -> Dict[str, int]:
        """Counted from the safetensors headers of `vae/`, the text encoder's folder and the condition encoder's
        weights (`encoder.*` of the variant's model.safetensors with its null condition and silence latent, or
        `condition_encoder/`)."""
        if self.folder.layout == "diffusers":
            folders = {"vae": ("vae", VAE_DIR), "text_encoder": ("text_encoder", TEXT_ENCODER_DIR)}
            encoder = _stored_elements(sorted((self.folder.path / "condition_encoder").glob("*.safetensors")))
        else:
            folders = {"vae": (VAE_DIR, VAE_DIR), "text_encoder": (TEXT_ENCODER_DIR, TEXT_ENCODER_DIR)}
            files = weight_files(self.folder.path)
            encoder = sum(math.prod(shape) for shape in _encoder_shapes(files).values())
            try:
                encoder += read_null_condition(files, torch.float32).numel()
                encoder += read_silence_latent(self.folder.path).numel()
            except ConfigError:  # an incomplete download: sampling will say so, training never needs these
                pass
        sizes = {}
        for helper, (diffusers_name, name) in folders.items():
            try:
                folder = shared_folder(self.folder, name, diffusers_name)
                sizes[helper] = _stored_elements(sorted(folder.glob("*.safetensors")))
            except ConfigError:  # sampling will say so and training goes on: it never holds this one
                pass
        return {**sizes, "condition_encoder": encoder}

    def identity(self) -> str:
        return json.dumps({"checkpoint": str(self.folder.path), "variant": self.cfg.variant}, sort_keys=True)

    def weights_digest(self) -> str:
        """The DiT's weight files, sampled at fixed offsets (a full hash of a 5 GB file would add a minute to every
        start on a slow disk), with their names and sizes."""
        path = self.folder.path
        files = sorted((path / "transformer").glob("*.safetensors")) if self.folder.layout == "diffusers" \
            else weight_files(path)
        digest = hashlib.sha256()
        for file in files:
            size = file.stat().st_size
            digest.update(f"{file.name}\0{size}\n".encode())
            with open(file, "rb") as f:
                for i in range(WEIGHT_PROBES):
                    f.seek(size * i // WEIGHT_PROBES)
                    digest.update(f.read(64 * 1024))
        return digest.hexdigest()[:16]

    def original_folder(self, scratch: Path) -> Path:
        if self.folder.layout != "original":
            raise SidestepError(f"{self.folder.path}: --merge writes ACE-Step variant folders and needs an ACE-Step "
                                "checkpoint (config.json + model.safetensors), not a diffusers-format one")
        return self.folder.path


def _take(node, key: str, found: dict, name: str) -> None:
    if key in found and found[key][0] != node[key]:
        value, where = found[key]
        log.info("%s = %s from the checkpoint's %s (config said %s)", name, value, where, node[key])
        node[key] = value


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


def _stored_elements(files) -> int:
    total = 0
    for path in files:
        with safe_open(path, framework="pt") as f:
            total += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())
    return total


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
