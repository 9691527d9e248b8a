"""What must not change across a resume, as a dict of comparable values stored in every checkpoint.

Settings that shape the adapter or the data order are compared by value. The dataset and the base model are
compared by content: a sample file edited in place, or a different checkpoint at the same path, is a different
run even when names and sizes agree.
"""

import hashlib
from pathlib import Path
from typing import Dict, Iterable, List

from omegaconf import DictConfig, OmegaConf

from sidestep.digest import file_hash
from sidestep.models.source import model_source

# what a checkpoint written before `adapter=` had a choice trained: plain LoRA
BEFORE_ADAPTER_TYPES = {"adapter": {"_target_": "sidestep.adapters.lora.Lora", "use_rslora": False, "use_dora": False}}


def fingerprint(cfg: DictConfig, sample_files: List[Path]) -> Dict[str, object]:
    return {
        "model.variant": cfg.model.variant,
        "model.arch": OmegaConf.to_container(cfg.model.arch),
        "model.weights": model_source(cfg.model).weights_digest(),
        "adapter": OmegaConf.to_container(cfg.adapter),
        "model.quantize": None if cfg.model.get("quantize") is None else str(cfg.model.quantize),
        "lora.rank": cfg.lora.rank,
        "lora.alpha": cfg.lora.alpha,
        "lora.target_modules": list(cfg.lora.target_modules),
        "lora.rank_map": cfg.lora.rank_map and file_hash(Path(cfg.lora.rank_map)),
        "lora.bias": cfg.lora.bias,
        "attention.blocks": list(cfg.attention.blocks),
        "dataset": dataset_digest(sample_files),
        "data.val_fraction": cfg.data.val_fraction,
        "trainer.batch_size": cfg.trainer.batch_size,
        "trainer.gradient_accumulation": cfg.trainer.gradient_accumulation,
        "trainer.seed": cfg.trainer.seed,
    }


def mismatches(saved: dict, current: dict) -> List[str]:
    """One line per setting that differs; content digests are named as such rather than printed."""
    lines = []
    for key, value in current.items():
        if saved.get(key, BEFORE_ADAPTER_TYPES.get(key)) == value:
            continue
        if key in ("dataset", "model.weights"):
            lines.append(f"{key}: contents differ from the checkpoint's (digest {saved.get(key)} vs {value})")
        else:
            lines.append(f"{key}: checkpoint has {saved.get(key)!r}, this run has {value!r}")
    return lines


def dataset_digest(sample_files: Iterable[Path]) -> str:
    """The names and full contents of the training samples, in order."""
    digest = hashlib.sha256()
    for path in sample_files:
        digest.update(f"{Path(path).name}\0{file_hash(path)}\n".encode())
    return digest.hexdigest()[:16]
