"""Read one training sample file and check it fits the model, naming the file in every complaint.

Formats: ACE-Step / Side-Step `.pt` dicts (read with `weights_only=True`, never unpickling code) and
our `.safetensors` (metadata JSON in the header). Layout per sample:
`target_latents` [T, C], `attention_mask` [T], `encoder_hidden_states` [L, H],
`encoder_attention_mask` [L], `context_latents` [T, 2C].
"""

import json
import math
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict

import torch
from safetensors import SafetensorError, safe_open

from sidestep.data.stored_tensors import dense_copy
from sidestep.errors import DataError, first_line

TENSOR_KEYS = ("target_latents", "attention_mask", "encoder_hidden_states", "encoder_attention_mask", "context_latents")
METADATA_KEY = "sidestep_metadata"
SAMPLE_SUFFIXES = (".pt", ".safetensors")
# Beyond these, a value is corruption, not music: VAE latents stay within a few tens; text-encoder states within
# fp16's range (65504), which their bf16/fp16 encoders could not have exceeded.
MAX_ABS = {"target_latents": 1e3, "context_latents": 1e3, "encoder_hidden_states": 65504.0}
TEXT_FIELDS = ("caption", "lyrics", "language", "keyscale", "timesignature")  # what `sampling.prompts` reads


@dataclass(frozen=True)
class SampleShape:
    """What the model expects: latent channels, context channels, text-condition width, shortest length."""

    latent_dim: int
    context_dim: int
    condition_dim: int
    min_frames: int


def sample_shape(model_cfg) -> SampleShape:
    """The sample layout `model.arch` trains on (checked for every file before the model is built)."""
    arch = model_cfg.arch
    return SampleShape(latent_dim=arch.audio_acoustic_hidden_dim, context_dim=arch.in_channels - arch.audio_acoustic_hidden_dim,
                       condition_dim=arch.encoder_hidden_size, min_frames=arch.patch_size)


def read_sample(path: Path) -> Dict[str, Any]:
    """Tensors (float32, bool masks) plus `metadata` (a dict, possibly empty)."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    raw = _read_safetensors(path) if path.suffix == ".safetensors" else _read_pt(path)
    missing = [k for k in TENSOR_KEYS if k not in raw]
    if missing:
        raise DataError(f"{path}: missing {', '.join(missing)}; is this a preprocessed Side-Step/ACE-Step sample?")
    sample: Dict[str, Any] = {"metadata": _checked_metadata(path, raw.get("metadata"))}
    for key in TENSOR_KEYS:
        value = raw[key]
        if not isinstance(value, torch.Tensor):
            raise DataError(f"{path}: {key} is a {type(value).__name__}, not a tensor")
        sample[key] = dense_copy(path, key, value, torch.bool if key.endswith("attention_mask") else torch.float32)
    return sample


def _checked_metadata(path: Path, meta: Any) -> Dict[str, Any]:
    """The sample's labels: a dict whose prompt fields are text and whose `bpm` is a number (or absent)."""
    if meta is None:
        return {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) for k in meta):
        raise DataError(f"{path}: metadata is a {type(meta).__name__}, expected a mapping of names to values "
                        "(caption, lyrics, ...); re-run preprocessing for this file")
    for key in TEXT_FIELDS:
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise DataError(f"{path}: metadata {key} is a {type(meta[key]).__name__}, expected text; "
                            "re-run preprocessing for this file")
    bpm = meta.get("bpm")
    if bpm is not None and (isinstance(bpm, bool) or not isinstance(bpm, (int, float)) or not math.isfinite(bpm)):
        raise DataError(f"{path}: metadata bpm is {bpm!r}, expected a number; re-run preprocessing for this file")
    return meta


def check_sample(path: Path, sample: Dict[str, Any], shape: SampleShape) -> None:
    """Raise `DataError` if the sample's shapes or values cannot train `shape`'s model."""
    lat, mask, enc, enc_mask, ctx = (sample[k] for k in TENSOR_KEYS)

    def fail(problem: str) -> None:
        raise DataError(f"{path}: {problem}")

    if lat.ndim != 2 or lat.shape[1] != shape.latent_dim:
        fail(f"target_latents has shape {list(lat.shape)}, expected [frames, {shape.latent_dim}]")
    frames = lat.shape[0]
    if frames < shape.min_frames:
        fail(f"only {frames} latent frames, need at least {shape.min_frames}")
    if list(mask.shape) != [frames]:
        fail(f"attention_mask has shape {list(mask.shape)}, expected [{frames}] like target_latents")
    if list(ctx.shape) != [frames, shape.context_dim]:
        fail(f"context_latents has shape {list(ctx.shape)}, expected [{frames}, {shape.context_dim}]")
    if enc.ndim != 2 or enc.shape[1] != shape.condition_dim:
        fail(f"encoder_hidden_states has shape {list(enc.shape)}, expected [tokens, {shape.condition_dim}] for this model")
    if list(enc_mask.shape) != [enc.shape[0]]:
        fail(f"encoder_attention_mask has shape {list(enc_mask.shape)}, expected [{enc.shape[0]}]")
    if not mask.any():
        fail("attention_mask is all false: no frame of audio to train on; re-run preprocessing for this file")
    if not enc_mask.any():
        fail("encoder_attention_mask is all false: no text condition; re-run preprocessing for this file")
    for key, value in (("target_latents", lat), ("encoder_hidden_states", enc), ("context_latents", ctx)):
        if not torch.isfinite(value).all():
            fail(f"{key} contains NaN or Inf; re-run preprocessing for this file")
        largest = float(value.abs().max()) if value.numel() else 0.0
        if largest > MAX_ABS[key]:
            fail(f"{key} reaches {largest:.3g}, far beyond what the encoders produce (|x| <= {MAX_ABS[key]:g}); "
                 "re-run preprocessing for this file")


def _read_pt(path: Path) -> Dict[str, Any]:
    try:
        # Memory-mapped (zip format, all torch writes): only what a tensor shows is read, not a huge storage behind it.
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        raise DataError(f"{path}: refused to load, it holds Python objects beyond tensors (unsafe or not a sample): "
                        f"{first_line(err)}") from None
    except Exception as err:  # truncated zip, not a torch file at all
        raise DataError(f"{path}: unreadable .pt file ({type(err).__name__}); re-run preprocessing for it") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: holds a {type(raw).__name__}, expected a dict of tensors")
    return raw


def _read_safetensors(path: Path) -> Dict[str, Any]:
    try:
        with safe_open(path, framework="pt") as f:
            tensors: Dict[str, Any] = {key: f.get_tensor(key) for key in f.keys()}
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable .safetensors file ({err}); re-run preprocessing for it") from None
    try:
        tensors["metadata"] = json.loads(header.get(METADATA_KEY, "{}"))
    except (json.JSONDecodeError, RecursionError):
        raise DataError(f"{path}: metadata in the file header is not valid JSON (or nested too deeply); "
                        "re-run preprocessing for this file") from None
    return tensors
