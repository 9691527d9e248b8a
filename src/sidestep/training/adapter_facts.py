"""What an exported adapter says about how it was made, in every safetensors header it is written in.

Kohya's `ss_*` names where one means the same thing (LoRA managers and A1111-style UIs show them), SAI's
`modelspec.trigger_phrase` for the trigger tag, `sidestep_*` for the rest. Every value is a string (safetensors
holds str -> str) and comes from the run's config, its plan and its fingerprint, never from the clock, so the same
run exports the same bytes. None of these keys is one a loader acts on: diffusers reads `lora_adapter_metadata`
only, ComfyUI and PEFT read no header at all.
"""

import json
import math
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Dict, Optional

from omegaconf import DictConfig, OmegaConf
from safetensors import safe_open

from sidestep.config.saved import plain_select, read_plain
from sidestep.data.loader import dataset_folder
from sidestep.errors import SidestepError
from sidestep.run_files import if_present

Facts = Dict[str, str]
PREFIXES = ("ss_", "sidestep_", "modelspec.")  # what a header holds of these facts, read back by `header_facts`
PREPROCESS_RECORDS = ".preprocess"  # `sidestep.preprocess` keeps each run's config under <out_dir>/.preprocess/


def run_facts(cfg: DictConfig, plan, fingerprint: dict) -> Facts:
    """The facts of a run that hold for every step: base model, data, optimizer, Side-Step. `plan` is the run's
    `RunPlan`, `fingerprint` what its checkpoints compare (the base weights' digest)."""
    def pick(key: str):
        return OmegaConf.select(cfg, key)

    dataset = dataset_name(cfg)
    facts = {
        "ss_base_model_version": f"acestep-v15-{cfg.model.variant}",
        "sidestep_base_model_digest": str(fingerprint.get("model.weights", "")),
        "ss_num_train_images": str(plan.samples),
        "ss_dataset_dirs": json.dumps({dataset: {"n_repeats": 1, "img_count": plan.samples}}),
        "sidestep_dataset_minutes": f"{plan.audio_seconds / 60:.1f}",
        "ss_max_train_steps": str(plan.total_steps),
        "ss_num_epochs": str(plan.epochs),
        "sidestep_steps_per_epoch": str(plan.steps_per_epoch),
        "ss_optimizer": str(pick("optimizer._target_")),
        "ss_learning_rate": f"{pick('optimizer.lr'):g}",
        "ss_lr_scheduler": str(pick("scheduler._target_")).rsplit(".", 1)[-1],
        "ss_lr_warmup_steps": str(pick("scheduler.warmup_steps")),
        "ss_batch_size_per_device": str(plan.batch_size),
        "ss_gradient_accumulation_steps": str(plan.gradient_accumulation),
        "ss_mixed_precision": plan.precision,
        "ss_max_grad_norm": f"{pick('trainer.max_grad_norm'):g}",
        "ss_seed": str(pick("trainer.seed")),
        "sidestep_version": sidestep_version(),
    }
    tag = trigger_tag(cfg)
    if tag:
        facts.update({"sidestep_trigger_tag": tag, "modelspec.trigger_phrase": tag})
    return facts


def at_step(facts: Facts, step: int, epoch: Optional[int] = None) -> Facts:
    """`facts` with the step the weights were taken at and its epoch (counted from 1; by default worked out from
    the steps per epoch the facts hold)."""
    if epoch is None:
        per_epoch = int(facts.get("sidestep_steps_per_epoch") or 0)
        epoch = math.ceil(step / per_epoch) if per_epoch else None
    return {**facts, "ss_steps": str(step), **({"ss_epoch": str(epoch)} if epoch is not None else {})}


def header_facts(weights_file: Path) -> Facts:
    """The facts a Side-Step safetensors file holds (none for a file an older version wrote)."""
    def read() -> Facts:
        with safe_open(str(weights_file), framework="pt") as f:
            header = f.metadata() or {}
        return {k: v for k, v in header.items() if k.startswith(PREFIXES) and k != "ss_output_name"}

    return if_present(read) or {}


def dataset_name(cfg: DictConfig) -> str:
    """The songs' folder name (preprocessed in the run: the folder of songs), else the samples' folder."""
    audio_dir = OmegaConf.select(cfg, "preprocess.audio_dir")
    return Path(audio_dir).name if audio_dir else dataset_folder(cfg).name


def trigger_tag(cfg: DictConfig) -> Optional[str]:
    """The tag preprocessing added to every caption: this run's `preprocess.trigger_tag`, else the one the newest
    `sidestep.preprocess` of the dataset folder recorded."""
    if OmegaConf.select(cfg, "preprocess.audio_dir"):
        return OmegaConf.select(cfg, "preprocess.trigger_tag")
    dataset_dir = OmegaConf.select(cfg, "data.dataset_dir")
    records = sorted(Path(dataset_dir).glob(f"{PREPROCESS_RECORDS}/*/.hydra/config.yaml")) if dataset_dir else []
    for record in reversed(records):
        try:
            tag = plain_select(read_plain(record), "trigger_tag")
        except (OSError, SidestepError):  # a record being written, or one that is not ours: the tag stays unknown
            continue
        if isinstance(tag, str) and tag.strip():
            return tag.strip()
    return None


def sidestep_version() -> str:
    try:
        return version("sidestep")
    except PackageNotFoundError:
        return "unknown"

