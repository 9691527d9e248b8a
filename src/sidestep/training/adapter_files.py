"""One trained adapter, written in the layouts its users load (DESIGN §6). Pure key and tensor work: no model.

- `adapter_model.safetensors` + `adapter_config.json`: diffusers module names (`layers.N.self_attn.to_q`), for
  `transformer.load_lora_adapter(dir, weight_name="adapter_model.safetensors", prefix=None)`. The header carries
  `lora_adapter_metadata`, because diffusers reads alpha from there and not from adapter_config.json.
- `pytorch_lora_weights.safetensors`: the same tensors under `transformer.` for `AceStepPipeline.load_lora_weights(dir)`,
  which picks this file name first.
- `acestep/`: a PEFT folder in the original ACE-Step names (`base_model.model.layers.N.self_attn.q_proj`), for
  ACE-Step's UI, which does `PeftModel.from_pretrained(model.decoder, path)`.
- `comfyui.safetensors`: `diffusion_model.decoder.<module>.lora_down/lora_up` plus a `<module>.alpha` tensor, the
  only place ComfyUI reads alpha from (without it an alpha = 2 x rank adapter loads at half strength).
"""

import json
import re
from pathlib import Path
from typing import Dict, Iterable, Tuple

import torch
from peft import LoraConfig
from safetensors.torch import load_file, save_file

from sidestep.atomic import atomic_dir, atomic_file
from sidestep.models.keymap import DECODER_PREFIX, diffusers_key_to_decoder

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
PIPELINE_WEIGHTS = "pytorch_lora_weights.safetensors"
COMFYUI_FILE = "comfyui.safetensors"
ACESTEP_DIR = "acestep"
METADATA_KEY = "lora_adapter_metadata"
PEFT_PREFIX = "base_model.model."
COMFYUI_PREFIX = "diffusion_model.decoder."
PIPELINE_PREFIX = "transformer."
FORMATS = ("diffusers", "acestep", "comfyui")
LORA_SUFFIX = re.compile(r"\.lora_([AB])\.weight$")

Weights = Dict[str, torch.Tensor]


def read_adapter(folder: Path) -> Tuple[Weights, LoraConfig]:
    """The diffusers-named tensors and the LoRA config of a Side-Step adapter folder."""
    return load_file(Path(folder) / WEIGHTS), LoraConfig.from_pretrained(str(folder))


def write_formats(weights: Weights, config: LoraConfig, folder: Path, formats: Iterable[str] = FORMATS) -> None:
    """Each file or folder is written under a temporary name and renamed into place."""
    folder = Path(folder)
    formats = set(formats)
    if "diffusers" in formats:
        _write_diffusers(weights, config, folder)
    if "acestep" in formats:
        _write_acestep(weights, config, folder / ACESTEP_DIR)
    if "comfyui" in formats:
        _write_comfyui(weights, config, folder / COMFYUI_FILE)


def module_scales(weights: Weights, config: LoraConfig) -> Dict[str, Tuple[int, float]]:
    """{diffusers module name: (rank, alpha)}, honouring per-module rank and alpha patterns."""
    scales = {}
    for key, tensor in weights.items():
        match = LORA_SUFFIX.search(key)
        if match and match.group(1) == "A":
            module = key[: match.start()]
            alpha = _pattern_value(config.alpha_pattern, module, config.lora_alpha)
            scales[module] = (tensor.shape[0], float(alpha))
    return scales


def original_module_name(module: str) -> str:
    """`layers.0.self_attn.to_out.0` -> `layers.0.self_attn.o_proj` (DESIGN §3's table)."""
    return diffusers_key_to_decoder(module + ".weight")[len(DECODER_PREFIX):-len(".weight")]


def _metadata(config: LoraConfig, prefix: str = "", indent=None) -> str:
    fields = {f"{prefix}{k}": sorted(v) if isinstance(v, set) else v for k, v in config.to_dict().items()}
    return json.dumps(fields, sort_keys=True, indent=indent)


def _save(tensors: Weights, path: Path, metadata: Dict[str, str]) -> None:
    with atomic_file(path) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt", **metadata})


def _save_config(config: LoraConfig, path: Path) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(_metadata(config, indent=2) + "\n")


def _write_diffusers(weights: Weights, config: LoraConfig, folder: Path) -> None:
    _save(weights, folder / WEIGHTS, {METADATA_KEY: _metadata(config)})
    piped = {PIPELINE_PREFIX + k: v for k, v in weights.items()}
    _save(piped, folder / PIPELINE_WEIGHTS, {METADATA_KEY: _metadata(config, PIPELINE_PREFIX)})
    _save_config(config, folder / CONFIG)


def _write_acestep(weights: Weights, config: LoraConfig, folder: Path) -> None:
    renamed = {}
    for key, tensor in weights.items():
        match = LORA_SUFFIX.search(key)
        renamed[f"{PEFT_PREFIX}{original_module_name(key[: match.start()])}{key[match.start():]}"] = tensor
    original = LoraConfig(**{**config.to_dict(), "target_modules": _original_pattern(config.target_modules),
                             "rank_pattern": _rename_pattern(config.rank_pattern),
                             "alpha_pattern": _rename_pattern(config.alpha_pattern)})
    with atomic_dir(folder) as tmp:
        save_file(renamed, tmp / WEIGHTS, metadata={"format": "pt"})
        _save_config(original, tmp / CONFIG)


def _write_comfyui(weights: Weights, config: LoraConfig, path: Path) -> None:
    out = {}
    for module, (_, alpha) in module_scales(weights, config).items():
        name = COMFYUI_PREFIX + original_module_name(module)
        out[f"{name}.lora_down.weight"] = weights[f"{module}.lora_A.weight"]
        out[f"{name}.lora_up.weight"] = weights[f"{module}.lora_B.weight"]
        out[f"{name}.alpha"] = torch.tensor(alpha)
    _save(out, path, {})


def _pattern_value(pattern: dict, module: str, default):
    for key, value in (pattern or {}).items():
        if module == key or module.endswith("." + key):
            return value
    return default


def _original_pattern(target_modules):
    """The diffusers-name regex (or list) with attention projections in the original names."""
    if isinstance(target_modules, str):
        for new, old in (("to_out\\.0", "o_proj"), ("to_q", "q_proj"), ("to_k", "k_proj"), ("to_v", "v_proj")):
            target_modules = target_modules.replace(new, old)
        return target_modules
    return sorted(original_module_name(m) for m in target_modules)


def _rename_pattern(pattern: dict) -> dict:
    return {original_module_name(k): v for k, v in (pattern or {}).items()}


def merge_into(base: Weights, weights: Weights, config: LoraConfig) -> Weights:
    """Base weights (diffusers names) with each LoRA folded in: W + alpha / rank * B @ A."""
    merged = dict(base)
    for module, (rank, alpha) in module_scales(weights, config).items():
        down, up = weights[f"{module}.lora_A.weight"].float(), weights[f"{module}.lora_B.weight"].float()
        weight = base[f"{module}.weight"]
        merged[f"{module}.weight"] = (weight.float() + (alpha / rank) * (up @ down)).to(weight.dtype)
    return merged
