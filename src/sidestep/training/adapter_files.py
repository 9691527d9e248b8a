"""One trained adapter, written in the layouts its users load (DESIGN §6). Pure key and tensor work: no model.

`adapter/` holds, each consumer's files in a place named for it, and `formats.json` saying which is which:
- `adapter_model.safetensors` + `adapter_config.json` (diffusers): diffusers module names (`layers.N.self_attn.to_q`),
  for `transformer.load_lora_adapter(adapter, weight_name="adapter_model.safetensors", prefix=None)`; also what
  Side-Step itself reads back (sample, export). The header carries `lora_adapter_metadata`, because diffusers reads
  alpha from there and not from adapter_config.json.
- `diffusers_pipeline/pytorch_lora_weights.safetensors`: the same tensors under `transformer.`, for
  `AceStepPipeline.load_lora_weights(adapter/diffusers_pipeline)`.
- `acestep/<name>/`: a PEFT folder in the original ACE-Step names (`base_model.model.layers.N.self_attn.q_proj`), for
  ACE-Step's UI, which does `PeftModel.from_pretrained(model.decoder, path, adapter_name=<folder name>)`.
- `comfyui/<name>.safetensors`: `diffusion_model.decoder.<module>.lora_down/lora_up` plus a `<module>.alpha` tensor,
  the only place ComfyUI reads alpha from (without it an alpha = 2 x rank adapter loads at half strength).

Exports are inference artefacts: their configs and headers say `lora_dropout` 0 (diffusers never calls `.eval()`,
so a training dropout would make every generation random), and their tensors are in `export.dtype`. Every
safetensors file carries rank, alpha and target modules in its header.
"""

import json
import re
from pathlib import Path
from typing import Dict, Iterable, Tuple

import torch
from peft import LoraConfig
from safetensors.torch import load_file

from sidestep.atomic import atomic_dir, atomic_file, save_safetensors
from sidestep.models.keymap import DECODER_PREFIX, diffusers_key_to_decoder

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
FORMATS_FILE = "formats.json"
PIPELINE_DIR, PIPELINE_WEIGHTS = "diffusers_pipeline", "pytorch_lora_weights.safetensors"
ACESTEP_DIR, COMFYUI_DIR = "acestep", "comfyui"
METADATA_KEY = "lora_adapter_metadata"
PEFT_PREFIX = "base_model.model."
COMFYUI_PREFIX = "diffusion_model.decoder."
PIPELINE_PREFIX = "transformer."
FORMATS = ("diffusers", "diffusers_pipeline", "acestep", "comfyui")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LORA_SUFFIX = re.compile(r"\.lora_([AB])\.weight$")

Weights = Dict[str, torch.Tensor]


def read_adapter(folder: Path) -> Tuple[Weights, LoraConfig]:
    """The diffusers-named tensors and the LoRA config of a Side-Step adapter folder."""
    return load_file(Path(folder) / WEIGHTS), LoraConfig.from_pretrained(str(folder))


def inference_config(config: LoraConfig) -> LoraConfig:
    """The training config with dropout off: what every exported file says."""
    return LoraConfig(**{**config.to_dict(), "lora_dropout": 0.0})


def write_formats(weights: Weights, config: LoraConfig, folder: Path, name: str, dtype: str = "fp32",
                  formats: Iterable[str] = FORMATS) -> None:
    """Each file or folder is written under a temporary name and renamed into place; `formats.json` lists what
    the folder holds afterwards."""
    folder, formats = Path(folder), [f for f in FORMATS if f in set(formats)]
    config = inference_config(config)
    weights = {k: v.detach().to("cpu", DTYPES[dtype]).contiguous() for k, v in weights.items()}
    original = _original_config(config)
    entries = {}
    if "diffusers" in formats:
        header = lora_header(config, name, dtype, {METADATA_KEY: _metadata(config)})
        save_safetensors(weights, folder / WEIGHTS, header)
        _save_config(config, folder / CONFIG)
        entries["diffusers"] = _entry(WEIGHTS, config, dtype, "transformer.load_lora_adapter(<adapter>, "
                                      "weight_name='adapter_model.safetensors', prefix=None)")
    if "diffusers_pipeline" in formats:
        piped = {PIPELINE_PREFIX + k: v for k, v in weights.items()}
        header = lora_header(config, name, dtype, {METADATA_KEY: _metadata(config, PIPELINE_PREFIX)})
        with atomic_dir(folder / PIPELINE_DIR) as tmp:
            save_safetensors(piped, tmp / PIPELINE_WEIGHTS, header)
        entries["diffusers_pipeline"] = _entry(PIPELINE_DIR, config, dtype,
                                               "pipe.load_lora_weights(<adapter>/diffusers_pipeline)")
    if "acestep" in formats:
        with atomic_dir(folder / ACESTEP_DIR) as tmp:
            save_safetensors(_acestep_tensors(weights), tmp / name / WEIGHTS, lora_header(original, name, dtype))
            _save_config(original, tmp / name / CONFIG)
        entries["acestep"] = {**_entry(f"{ACESTEP_DIR}/{name}", original, dtype,
                                       f"ACE-Step UI: LoRA path <adapter>/acestep/{name} (adapter name '{name}')"),
                              "adapter_name": name}
    if "comfyui" in formats:
        with atomic_dir(folder / COMFYUI_DIR) as tmp:
            save_safetensors(_comfyui_tensors(weights, config), tmp / f"{name}.safetensors",
                             lora_header(original, name, dtype))
        entries["comfyui"] = _entry(f"{COMFYUI_DIR}/{name}.safetensors", original, dtype,
                                    "copy into ComfyUI/models/loras/ and pick it in a LoRA loader node")
    _update_formats_file(folder / FORMATS_FILE, entries)


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


def _entry(path: str, config: LoraConfig, dtype: str, load: str) -> dict:
    entry = {"path": path, "rank": config.r, "alpha": float(config.lora_alpha), "target_modules": _targets(config),
             "dtype": dtype, "load": load}
    for key in ("rank_pattern", "alpha_pattern"):
        if getattr(config, key):
            entry[key] = dict(getattr(config, key))
    return entry


def _targets(config: LoraConfig):
    targets = config.target_modules
    return sorted(targets) if isinstance(targets, (set, list, tuple)) else targets


def lora_header(config: LoraConfig, name: str, dtype: str, extra: Dict[str, str] = None) -> Dict[str, str]:
    """What a LoRA manager or a person inspecting the file needs without its config: rank, alpha, targets."""
    header = {"format": "pt", "name": name, "rank": str(config.r), "alpha": f"{float(config.lora_alpha):g}",
              "target_modules": json.dumps(_targets(config)), "lora_dropout": str(config.lora_dropout), "dtype": dtype}
    for key in ("rank_pattern", "alpha_pattern"):
        if getattr(config, key):
            header[key] = json.dumps(dict(getattr(config, key)), sort_keys=True)
    return {**header, **(extra or {})}


def _metadata(config: LoraConfig, prefix: str = "", indent=None) -> str:
    fields = {f"{prefix}{k}": sorted(v) if isinstance(v, set) else v for k, v in config.to_dict().items()}
    return json.dumps(fields, sort_keys=True, indent=indent)


def _save_config(config: LoraConfig, path: Path) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(_metadata(config, indent=2) + "\n")


def _update_formats_file(path: Path, entries: dict) -> None:
    """Entries of formats written earlier into the same folder stay listed while their files are there."""
    found = json.loads(path.read_text()) if path.is_file() else {}
    found = {k: v for k, v in found.items() if k not in entries and (path.parent / v["path"]).exists()}
    ordered = {k: {**found, **entries}[k] for k in FORMATS if k in {**found, **entries}}
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(ordered, indent=2) + "\n")


def _acestep_tensors(weights: Weights) -> Weights:
    renamed = {}
    for key, tensor in weights.items():
        match = LORA_SUFFIX.search(key)
        renamed[f"{PEFT_PREFIX}{original_module_name(key[: match.start()])}{key[match.start():]}"] = tensor
    return renamed


def _original_config(config: LoraConfig) -> LoraConfig:
    return LoraConfig(**{**config.to_dict(), "target_modules": _original_pattern(config.target_modules),
                         "rank_pattern": _rename_pattern(config.rank_pattern),
                         "alpha_pattern": _rename_pattern(config.alpha_pattern)})


def _comfyui_tensors(weights: Weights, config: LoraConfig) -> Weights:
    out = {}
    for module, (_, alpha) in module_scales(weights, config).items():
        name = COMFYUI_PREFIX + original_module_name(module)
        out[f"{name}.lora_down.weight"] = weights[f"{module}.lora_A.weight"]
        out[f"{name}.lora_up.weight"] = weights[f"{module}.lora_B.weight"]
        out[f"{name}.alpha"] = torch.tensor(alpha)
    return out


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
