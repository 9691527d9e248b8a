"""Every step you can hear, you can keep: each round of samples keeps the adapter it was rendered with as
`<run>/adapters/step-N/`, laid out as the final `adapter/` (every format its type loads in, `formats.json`, the
model card) and named `<run.name>-stepN`, so the step that sounds best in the report is there to load, whatever
`trainer.keep_checkpoints` pruned. Only the adapter weights: the resume state stays in `checkpoints/`.
`sidestep.export` of a checkpoint writes to the same place (`checkpoint.export_dir`).
"""

import json
import os
from pathlib import Path
from typing import List, Tuple

import torch

from sidestep.adapters.attach import save_adapter
from sidestep.sizes import binary_size
from sidestep.training.adapter_facts import Facts, at_step

ADAPTERS = "adapters"
SAMPLES = "samples"


def step_adapter_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / ADAPTERS / f"step-{step:07d}"


def step_adapter_name(run_name: str, step: int) -> str:
    return f"{run_name}-step{step}"


def keep_step_adapter(transformer: torch.nn.Module, run_dir: Path, step: int, run_name: str, dtype: str,
                      facts: Facts, target: Path = None) -> Path:
    """Write the adapter `transformer` carries now, its weights at `step`, to `<run>/adapters/step-N/` (or
    `target`), in `dtype`, with `facts` in its headers and the samples of that step in its model card. Call it for
    any step whose weights are live: a round of samples, the best held-out loss. Written whole or not at all; a
    full disk is one OSError naming the folder."""
    target = Path(target or step_adapter_dir(run_dir, step))
    save_adapter(transformer, target, step_adapter_name(run_name, step), dtype, at_step(facts, step),
                 card_samples(run_dir, step, target))
    return target


def card_samples(run_dir: Path, step: int, card_dir: Path) -> List[Tuple[str, str]]:
    """(prompt, link from `card_dir`) of each sample rendered at `step` during training."""
    found = []
    for info_file in sorted((Path(run_dir) / SAMPLES / f"step-{step:07d}").glob("*.json")):
        wav = info_file.with_suffix(".wav")
        try:
            info = json.loads(info_file.read_text())
        except (OSError, ValueError):
            continue
        if wav.is_file() and isinstance(info, dict) and isinstance(info.get("prompt"), str):
            found.append((info["prompt"], Path(os.path.relpath(wav, card_dir)).as_posix()))
    return found


def adapter_copies(kind) -> int:
    """How many copies of the adapter a folder holds: Side-Step's own file (diffusers' too) and one per other
    program that loads the type (`AdapterType.formats`)."""
    return 1 + len(set(kind.formats) - {"diffusers"})


def disk_cost(steps: int, file_bytes: int, copies: int) -> str:
    """What keeping `steps` step adapters takes, each `copies` files of `file_bytes`, for the setup summary."""
    if not steps:
        return "none (no samples while training: sample.every_n_epochs / sample.every_n_steps)"
    each = file_bytes * copies
    return (f"{steps} in {ADAPTERS}/ (one per sampled step), {binary_size(each)} each ({copies} files of "
            f"{binary_size(file_bytes)}): {binary_size(steps * each)}")
