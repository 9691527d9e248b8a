"""A variant folder with an adapter folded into its DiT: what `python -m sidestep.export RUN --merge` writes.

It is the source variant folder again, complete: every tensor of its weights (the decoder merged; the condition
encoder, tokenizer, detokenizer and `null_condition_emb` copied), each in its own dtype, with `config.json`,
`silence_latent.pt` and the model's code files beside it, so ACE-Step loads it as one more variant. The fold is
PEFT's own merge (`fuse_lora`), on the decoder in the checkpoint's dtype.
"""

import shutil
import tempfile
from pathlib import Path
from typing import Dict

import torch
from peft import PeftConfig, set_peft_model_state_dict
from safetensors import safe_open

from sidestep.adapters.files import file_header
from sidestep.adapters.kind import kind_of
from sidestep.atomic import atomic_dir, save_safetensors
from sidestep.errors import SidestepError
from sidestep.models.checkpoints import INDEX_FILE, VARIANT_PREFIX, assign_weights, weight_files
from sidestep.models.dit import empty_dit
from sidestep.models.keymap import decoder_keys
from sidestep.models.source import ModelSource


def merge_into_variant(source: ModelSource, weights: Dict[str, torch.Tensor], config: PeftConfig,
                       target_root: Path, name: str) -> Path:
    """Write `target_root/acestep-v15-<variant>-<name>/`; returns that folder."""
    target = Path(target_root) / f"{VARIANT_PREFIX}{source.cfg.variant}-{name}"
    with tempfile.TemporaryDirectory() as scratch:
        folder = source.original_folder(Path(scratch))
        tensors = _read_all(folder)
        tensors.update(_merged_decoder(source, folder, tensors, weights, config))
        with atomic_dir(target) as tmp:
            header = {**file_header(kind_of(config), config, name, "source"), "merged_adapter": name}
            save_safetensors(tensors, tmp / "model.safetensors", header)
            for path in folder.iterdir():
                if path.is_file() and not _is_weights(path):
                    shutil.copyfile(path, tmp / path.name)  # copyfile: new files get the usual permissions
    return target


def _is_weights(path: Path) -> bool:
    return path.name == INDEX_FILE or (path.name.startswith("model") and path.suffix == ".safetensors")


def _read_all(folder: Path) -> Dict[str, torch.Tensor]:
    tensors = {}
    for path in weight_files(folder):
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    return tensors


def _merged_decoder(source: ModelSource, folder: Path, tensors: Dict[str, torch.Tensor],
                    weights: Dict[str, torch.Tensor], config: PeftConfig) -> Dict[str, torch.Tensor]:
    """The decoder's tensors (original names, original dtypes) with the adapter folded in by PEFT."""
    names = decoder_keys(tensors)  # {diffusers name: original name}
    dtypes = {old: tensors[old].dtype for old in names.values()}
    transformer = empty_dit(source.cfg)
    assign_weights(transformer, {new: tensors[old] for new, old in names.items()}, folder)
    transformer.add_adapter(kind_of(config).inference_config(config))
    result = set_peft_model_state_dict(transformer, weights)
    if result.unexpected_keys:
        raise SidestepError(f"{folder}: the adapter does not fit this model ({result.unexpected_keys[0]})")
    transformer.fuse_lora()
    transformer.unload_lora()
    return {names[k]: v.detach().to(dtypes[names[k]]).contiguous() for k, v in transformer.state_dict().items()}
