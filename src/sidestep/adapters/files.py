"""One trained adapter, written in the layouts its users load. Pure key and tensor work: no model.

`adapter/` holds each consumer's files in a place named for it, and `formats.json` saying which is which; a type
is written only in the formats that load it correctly (`AdapterType.formats`):
- `adapter_model.safetensors` + `adapter_config.json` (diffusers): diffusers module names (`layers.N.self_attn.to_q`),
  for `transformer.load_lora_adapter(adapter, weight_name="adapter_model.safetensors", prefix=None)`; also what
  Side-Step itself reads back (sample, export). The header carries `lora_adapter_metadata`, because diffusers reads
  alpha from there and not from adapter_config.json.
- `diffusers_pipeline/pytorch_lora_weights.safetensors`: the same tensors under `transformer.`, for
  `AceStepPipeline.load_lora_weights(adapter/diffusers_pipeline)`.
- `acestep/<name>/`: a PEFT folder in the original ACE-Step names (`base_model.model.layers.N.self_attn.q_proj`), for
  ACE-Step's UI, which does `PeftModel.from_pretrained(model.decoder, path, adapter_name=<folder name>)`.
- `comfyui/<name>.safetensors`: `diffusion_model.decoder.<original module>.*` with the keys and alpha ComfyUI's
  weight adapters expect for the type. DoRA's `dora_scale` and OFT's weight difference depend on the base weights,
  so those two need the DiT carrying the adapter (`model`) to write it.

Exports are inference artefacts: their configs and headers say dropout 0 and their tensors are in `export.dtype`.
Every safetensors file carries the type, rank, alpha and target modules in its header, with how it was trained
(`facts`: kohya's `ss_*` names where one means the same, so LoRA managers show them), and `README.md`, the model
card, says the same for a person (adapters/card.py). Side-Step reads the
diffusers-named copy back, so it is always written (the types diffusers cannot load keep it as a PEFT folder
only, left out of `formats.json`).
"""

import json
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from peft import PeftConfig
from safetensors.torch import load_file

from sidestep.adapters.card import CARD, model_card
from sidestep.adapters.kind import AdapterType, Weights, kind_of
from sidestep.adapters.targets import original_module_name, original_pattern, original_targets, split_key
from sidestep.atomic import atomic_dir, atomic_file, save_safetensors
from sidestep.config.choices import EXPORT_FORMATS

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
FORMATS_FILE = "formats.json"
PIPELINE_DIR, PIPELINE_WEIGHTS = "diffusers_pipeline", "pytorch_lora_weights.safetensors"
ACESTEP_DIR, COMFYUI_DIR = "acestep", "comfyui"
METADATA_KEY = "lora_adapter_metadata"
PEFT_PREFIX = "base_model.model."
COMFYUI_PREFIX = "diffusion_model.decoder."
PIPELINE_PREFIX = "transformer."
FORMATS = EXPORT_FORMATS
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Kept in float32 whatever `export.dtype` says: one number per module or per output row, so they cost nothing, and
# each sits next to the base weights' scale, where a bf16 rounding (0.4 %) is large beside a small trained change
# (DoRA's magnitude and ComfyUI `dora_scale` are about the base rows' norms). ComfyUI casts every patch tensor to
# float32 itself, and PEFT and diffusers copy a tensor into the adapter's own dtype, so a mixed file loads anywhere.
FULL_PRECISION = (".alpha", ".dora_scale", ".lora_magnitude_vector")


def read_adapter(folder: Path) -> Tuple[Weights, PeftConfig]:
    """The diffusers-named tensors and the PEFT config of a Side-Step adapter folder."""
    return load_file(Path(folder) / WEIGHTS), PeftConfig.from_pretrained(str(folder))


def write_formats(weights: Weights, config: PeftConfig, folder: Path, name: str, dtype: str = "fp32",
                  formats: Iterable[str] = FORMATS, model: Optional[torch.nn.Module] = None,
                  facts: Optional[Dict[str, str]] = None, samples: Sequence[Tuple[str, str]] = ()) -> List[str]:
    """Each file or folder is written under a temporary name and renamed into place; `formats.json` lists what
    the folder holds afterwards. `model`, the DiT carrying this adapter, is needed by the types whose ComfyUI file
    depends on the base weights (`AdapterType.needs_model`); without it that file is left out. `facts` (strings, see
    training/adapter_facts.py) go into every file's header, `samples` ((prompt, link) of its audio) into the model
    card. Returns the formats written."""
    kind = kind_of(config)
    folder, wanted = Path(folder), set(formats)
    config = kind.inference_config(config)
    weights = in_export_dtype(weights, dtype)
    original = _original_config(config)
    facts = {**(facts or {}), **_kohya_size(kind.describe(config)), "ss_output_name": name}
    entries = {}
    header = file_header(kind, config, name, dtype, {**facts, METADATA_KEY: _metadata(config)})
    save_safetensors(weights, folder / WEIGHTS, header)  # Side-Step's own copy, whatever the formats
    _save_config(config, folder / CONFIG)
    if "diffusers" in wanted and "diffusers" in kind.formats:
        entries["diffusers"] = _entry(kind, WEIGHTS, config, dtype, "transformer.load_lora_adapter(<adapter>, "
                                      "weight_name='adapter_model.safetensors', prefix=None)")
    if "diffusers_pipeline" in wanted and "diffusers_pipeline" in kind.formats:
        piped = {PIPELINE_PREFIX + k: v for k, v in weights.items()}
        header = file_header(kind, config, name, dtype, {**facts, METADATA_KEY: _metadata(config, PIPELINE_PREFIX)})
        with atomic_dir(folder / PIPELINE_DIR) as tmp:
            save_safetensors(piped, tmp / PIPELINE_WEIGHTS, header)
        entries["diffusers_pipeline"] = _entry(kind, PIPELINE_DIR, config, dtype,
                                               "pipe.load_lora_weights(<adapter>/diffusers_pipeline)")
    if "acestep" in wanted and "acestep" in kind.formats:
        with atomic_dir(folder / ACESTEP_DIR) as tmp:
            save_safetensors(_acestep_tensors(weights), tmp / name / WEIGHTS,
                             file_header(kind, original, name, dtype, facts))
            _save_config(original, tmp / name / CONFIG)
        entries["acestep"] = {**_entry(kind, f"{ACESTEP_DIR}/{name}", original, dtype,
                                       f"ACE-Step UI: LoRA path <adapter>/acestep/{name} (adapter name '{name}')"),
                              "adapter_name": name}
    comfy = kind.comfyui_tensors(weights, config, COMFYUI_PREFIX, model) if "comfyui" in wanted else None
    if comfy is not None and "comfyui" in kind.formats:
        comfy = in_export_dtype(comfy, dtype)
        with atomic_dir(folder / COMFYUI_DIR) as tmp:
            save_safetensors(comfy, tmp / f"{name}.safetensors", file_header(kind, original, name, dtype, facts))
        entries["comfyui"] = _entry(kind, f"{COMFYUI_DIR}/{name}.safetensors", original, dtype,
                                    "copy into ComfyUI/models/loras/ and pick it in a LoRA loader node")
    listed = _update_formats_file(folder / FORMATS_FILE, entries)
    card = model_card(name, file_header(kind, config, name, dtype, facts), listed, samples)
    with atomic_file(folder / CARD) as tmp:
        tmp.write_text(card, encoding="utf-8")
    return list(entries)


def _kohya_size(described: Dict[str, object]) -> Dict[str, str]:
    """Rank and alpha under kohya's names, which LoRA managers show; OFT, sized by its block, has neither."""
    if "rank" not in described:
        return {}
    return {"ss_network_dim": str(described["rank"]), "ss_network_alpha": f"{described['alpha']:g}"}


def in_export_dtype(weights: Weights, dtype: str) -> Weights:
    """The tensors in `dtype`, those named by `FULL_PRECISION` in float32."""
    return {k: v.detach().to("cpu", torch.float32 if k.endswith(FULL_PRECISION) else DTYPES[dtype]).contiguous()
            for k, v in weights.items()}


def file_header(kind: AdapterType, config: PeftConfig, name: str, dtype: str,
                extra: Dict[str, str] = None) -> Dict[str, str]:
    """What a LoRA manager or a person inspecting the file needs without its config: type, rank, alpha, targets."""
    header = {"format": "pt", "name": name, "adapter_type": peft_type_name(config),
              "target_modules": json.dumps(_targets(config)), "dtype": dtype}
    header.update({k: f"{v:g}" if isinstance(v, float) else str(v) for k, v in kind.describe(config).items()})
    for key in ("rank_pattern", "alpha_pattern"):
        if getattr(config, key, None):
            header[key] = json.dumps(dict(getattr(config, key)), sort_keys=True)
    return {**header, **(extra or {})}


def peft_type_name(config: PeftConfig) -> str:
    """`LORA`, `LOKR`, ...: PEFT's enum prints as `PeftType.LORA` under Python 3.11."""
    return str(getattr(config.peft_type, "value", config.peft_type))


def _entry(kind: AdapterType, path: str, config: PeftConfig, dtype: str, load: str) -> dict:
    entry = {"path": path, "type": peft_type_name(config), **kind.describe(config),
             "target_modules": _targets(config), "dtype": dtype, "load": load}
    for key in ("rank_pattern", "alpha_pattern"):
        if getattr(config, key, None):
            entry[key] = dict(getattr(config, key))
    return entry


def _targets(config: PeftConfig):
    targets = config.target_modules
    return sorted(targets) if isinstance(targets, (set, list, tuple)) else targets


def _metadata(config: PeftConfig, prefix: str = "", indent=None) -> str:
    fields = {f"{prefix}{k}": sorted(v) if isinstance(v, set) else v for k, v in config.to_dict().items()}
    return json.dumps(fields, sort_keys=True, indent=indent, default=str)


def _save_config(config: PeftConfig, path: Path) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(_metadata(config, indent=2) + "\n")


def _update_formats_file(path: Path, entries: dict) -> dict:
    """Entries of formats written earlier into the same folder stay listed while their files are there; returns
    what the file lists."""
    found = json.loads(path.read_text()) if path.is_file() else {}
    found = {k: v for k, v in found.items() if k not in entries and (path.parent / v["path"]).exists()}
    ordered = {k: {**found, **entries}[k] for k in FORMATS if k in {**found, **entries}}
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(ordered, indent=2) + "\n")
    return ordered


def _acestep_tensors(weights: Weights) -> Weights:
    renamed = {}
    for key, tensor in weights.items():
        module, leaf = split_key(key)
        renamed[f"{PEFT_PREFIX}{original_module_name(module)}.{leaf}"] = tensor
    return renamed


def _original_config(config: PeftConfig) -> PeftConfig:
    changes = {"target_modules": original_targets(config.target_modules)}
    for key in ("rank_pattern", "alpha_pattern"):
        if hasattr(config, key):
            changes[key] = original_pattern(getattr(config, key))
    return type(config)(**{**config.to_dict(), **changes})
