"""What must not change across a resume, as a dict of comparable values stored in every checkpoint.

Every setting that changes what a training step sees -- which samples form a batch and how they are cut, the
timesteps, noise and dropout drawn, the loss, the optimizer's maths, the adapter -- is compared by value (`COMPARED`).
The dataset and the base model are compared by content: a sample file edited in place, or a different checkpoint at
the same path, is a different run even when names and sizes agree. Every other setting is in `NOT_COMPARED` with the
reason it cannot change a step; a test walks the whole config so that a new knob must be put in one or the other.
"""

import hashlib
from enum import Enum
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf

from sidestep.config.renamed_keys import renamed_fingerprint
from sidestep.data.dataset import LatentDataset
from sidestep.digest import file_hash
from sidestep.models.source import ModelSource

# what a checkpoint written before `adapter=` had a choice trained: plain LoRA
BEFORE_ADAPTER_TYPES = {"adapter": {"_target_": "sidestep.adapters.lora.Lora", "use_rslora": False, "use_dora": False}}
# what a checkpoint written before a setting was recorded had: no adapter choice (plain LoRA), no EMA
RECORDED_LATER = {**BEFORE_ADAPTER_TYPES, "trainer.ema.decay": None}

# Config paths compared by value; a group (`optimizer`, `timesteps`, ...) is compared with every key it holds but
# those listed in NOT_COMPARED (`adapter.rank_map`, compared by content).
COMPARED = (
    "model._target_", "model.variant", "model.arch", "model.is_turbo", "model.timestep_mu", "model.timestep_sigma",
    "model.quantize", "adapter", "attention.blocks", "optimizer", "scheduler", "timesteps",
    "data.crop_seconds", "data.bucket_by_length", "data.val_fraction",
    "trainer.batch_size", "trainer.gradient_accumulation", "trainer.seed", "trainer.max_grad_norm", "trainer.precision",
    "trainer.ema.decay",  # the EMA a checkpoint holds goes on with the same decay, or the resumed run is another
)
BY_CONTENT = "compared by content"
NOT_COMPARED = {
    "model.checkpoint_dir": f"{BY_CONTENT} (model.weights): a moved folder is the same base",
    "model.init_seed": f"{BY_CONTENT} (model.weights) for the tiny model it seeds",
    "model.tiny_stack": "the tiny VAE and encoders: samples and the generated dataset (compared by content)",
    "model.sampling": "rendering samples only",
    "adapter.alpha_ratio": "resolved into adapter.alpha, which is compared",
    "adapter.rank_map": f"{BY_CONTENT} (the plan's file digest)",
    "data._target_": f"{BY_CONTENT} (dataset)",
    "data.dataset_dir": f"{BY_CONTENT} (dataset): a moved folder is the same data",
    "data.datasets": f"{BY_CONTENT} (dataset, with each sample's folder and repeats) and data.mix (each folder's "
                     "name, repeats and samples): moved folders are the same mix",
    "data.synthetic": f"{BY_CONTENT} (dataset)",
    "data.on_bad_sample": f"the files it leaves in are {BY_CONTENT} (dataset)",
    "data.num_workers": "how batches are loaded, not which (order and crops are seeded per sample)",
    "data.pin_memory": "how batches are loaded, not which",
    "data.prefetch_factor": "how batches are loaded, not which",
    "data.persistent_workers": "how batches are loaded, not which",
    "trainer.epochs": "training on to more epochs continues the same run",
    "trainer.max_steps": "training on to more steps continues the same run",
    "trainer.device": "the same maths on another device (bit-identity is only promised on one setup)",
    "trainer.attention_backend": "the same maths by another kernel",
    "trainer.compile": "the same maths, compiled",
    "trainer.compile_backend": "the same maths, compiled",
    "trainer.gradient_checkpointing": "the same maths, recomputed instead of stored",
    "trainer.on_nonfinite": "decides only what a non-finite step does (skip it to get past one)",
    "trainer.save_every": "what is written, not what is trained",
    "trainer.save_every_steps": "what is written, not what is trained",
    "trainer.keep_checkpoints": "what is written, not what is trained",
    "trainer.log_every": "what is written, not what is trained",
    "trainer.log_heavy_every": "what is written (held-out loss uses its own fixed noise)",
    "trainer.eval_every_steps": "when the held-out loss is scored (with its own fixed noise), not what is trained",
    "trainer.eval_every_epochs": "when the held-out loss is scored (with its own fixed noise), not what is trained",
    "trainer.ema.device": "where the same EMA is kept",
    "trainer.early_stop": "decides only when the run ends, like trainer.epochs",
    "run": "names the run", "export": "the adapter files written at the end", "ui": "the display",
    "resume": "how to resume", "resume_from": "where from", "estimate": "the sensitivity estimate, not training",
    "preprocess": f"its output is {BY_CONTENT} (dataset)", "sample": "rendering samples only",
}


def fingerprint(cfg: DictConfig, model: ModelSource, dataset: LatentDataset) -> Dict[str, object]:
    """What a resume compares: the trained settings of `cfg`, the digests of `model`'s weights and of the data. A
    mix of folders (`data.datasets`) also records each folder's name, repeats and samples (`data.mix`), and its
    digest covers which folder each sample is in and how often it is seen; one folder's stays as it was."""
    mix = dataset.mix
    return {
        **settings(cfg),
        "model.weights": model.weights_digest(),
        "adapter.rank_map": cfg.adapter.get("rank_map") and file_hash(Path(cfg.adapter.rank_map)),
        "dataset": dataset_digest(dataset.files, None if mix is None else [
            f"{dataset.folders[o]} x{r}" for o, r in zip(dataset.origin, dataset.repeats)]),
        **({} if mix is None else {"data.mix": mix}),
    }


def settings(cfg: DictConfig) -> Dict[str, object]:
    """The `COMPARED` values of `cfg`, as JSON-ready plain values."""
    return {path: _without_uncompared(path, _plain(OmegaConf.select(cfg, path))) for path in COMPARED}


def _without_uncompared(path: str, value):
    """A compared group without its keys listed in `NOT_COMPARED`."""
    if not isinstance(value, dict):
        return value
    return {k: v for k, v in value.items() if f"{path}.{k}" not in NOT_COMPARED}


def mismatches(saved: dict, current: dict) -> List[str]:
    """One line per setting that differs (per knob of a group of the same shape); content digests are named as
    such rather than printed."""
    saved = renamed_fingerprint(saved, BEFORE_ADAPTER_TYPES["adapter"])  # written before `lora.*` was `adapter.*`
    lines = []
    for key, value in current.items():
        if saved.get(key, RECORDED_LATER.get(key)) == value:
            continue
        if key not in saved and key not in RECORDED_LATER:
            lines.append(f"{key}: not recorded in the checkpoint (an older Side-Step wrote it), this run has {value!r}")
        elif key in ("dataset", "model.weights"):
            lines.append(f"{key}: contents differ from the checkpoint's (digest {saved.get(key)} vs {value})")
        elif isinstance(value, dict) and isinstance(saved.get(key), dict) and set(value) == set(saved[key]):
            lines += [f"{key}.{k}: checkpoint has {saved[key][k]!r}, this run has {v!r}"  # a group: the knobs
                      for k, v in value.items() if saved[key][k] != v]
        else:
            lines.append(f"{key}: checkpoint has {saved.get(key)!r}, this run has {value!r}")
    return lines


def dataset_digest(sample_files: Iterable[Path], folders: Optional[List[str]] = None) -> str:
    """The names and full contents of the training samples, in order (in a mix, each with its folder and repeats)."""
    digest = hashlib.sha256()
    for i, path in enumerate(sample_files):
        where = "" if folders is None else f"{folders[i]}\0"
        digest.update(f"{where}{Path(path).name}\0{file_hash(path)}\n".encode())
    return digest.hexdigest()[:16]


def _plain(value):
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True, enum_to_str=True)
    return str(value) if isinstance(value, Enum) else value
