"""Checkpoints that resume exactly, written so a crash never damages the last good one.

A checkpoint is `<run>/checkpoints/step-NNNNNNN/`:
- Accelerate's `save_state`: optimizer state and every RNG (python, numpy, torch, CUDA); Accelerate loads these
  with `weights_only=True`. Its model weights are replaced (save/load hooks) by the LoRA tensors alone.
- `adapter_model.safetensors`: the LoRA weights (diffusers names).
- `generators_<process>.safetensors`: each process's step generators (timesteps, noise, condition dropout) and a
  copy of its torch RNG state, so a silently failed RNG restore in Accelerate is caught.
- `trainer_state.json`: counters, position in the epoch, scheduler state, smoothed loss, config fingerprint.
It is built under `checkpoints/.tmp-step-NNNNNNN/` and renamed into place; the oldest beyond `keep` are pruned.
"""

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors import SafetensorError
from safetensors.torch import load_file

from sidestep.atomic import save_safetensors
from sidestep.errors import SidestepError
from sidestep.training.adapter_files import lora_header
from sidestep.training.flow_matching import StepGenerators

log = logging.getLogger(__name__)
STATE_FILE, LORA_FILE = "trainer_state.json", "adapter_model.safetensors"
GENERATORS_FILE = "generators_{}.safetensors"  # one per process
CHECKPOINTS = "checkpoints"
TMP_PREFIX = ".tmp-"


@dataclass
class TrainerState:
    """Where training is: `batch_in_epoch` batches of `epoch` are done (0 = the epoch has not started)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    smoothed_loss: Optional[float] = None
    first_loss: Optional[float] = None
    skipped_nonfinite: int = 0


class CheckpointError(SidestepError):
    """A checkpoint that cannot be used; the message names the file or the mismatching setting."""


def fingerprint(cfg: DictConfig, sample_files: List[Path]) -> Dict[str, object]:
    """What must not change across a resume: model, LoRA shape and targets, data and batching."""
    data = hashlib.sha256("\n".join(f"{p.name}:{p.stat().st_size}" for p in sample_files).encode()).hexdigest()[:16]
    return {
        "model.variant": cfg.model.variant,
        "model.arch": OmegaConf.to_container(cfg.model.arch),
        "lora.rank": cfg.lora.rank,
        "lora.alpha": cfg.lora.alpha,
        "lora.target_modules": list(cfg.lora.target_modules),
        "lora.rank_map": cfg.lora.rank_map and hashlib.sha256(Path(cfg.lora.rank_map).read_bytes()).hexdigest()[:16],
        "lora.bias": cfg.lora.bias,
        "attention.blocks": list(cfg.attention.blocks),
        "dataset": data,
        "data.val_fraction": cfg.data.val_fraction,
        "trainer.batch_size": cfg.trainer.batch_size,
        "trainer.gradient_accumulation": cfg.trainer.gradient_accumulation,
        "trainer.seed": cfg.trainer.seed,
    }


def register_lora_hooks(accelerator: Accelerator) -> None:
    """Accelerate saves and loads the LoRA tensors only, never the frozen base model."""

    def save_hook(models, weights, output_dir):
        for model in models:
            save_safetensors({k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()},
                             Path(output_dir) / LORA_FILE, lora_header(model.peft_config["default"], "checkpoint", "fp32"))
        weights.clear()

    def load_hook(models, input_dir):
        path = Path(input_dir) / LORA_FILE
        while models:
            model = models.pop()
            result = set_peft_model_state_dict(model, _read_safetensors(path))
            if result.unexpected_keys:
                raise CheckpointError(f"{path}: LoRA tensors do not fit this model ({result.unexpected_keys[0]})")

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def save_checkpoint(accelerator: Accelerator, run_dir: Path, state: TrainerState, gens: StepGenerators,
                    scheduler, fingerprint_: dict, keep: int) -> Path:
    """Write `checkpoints/step-N/` on every process's behalf; returns its path."""
    root = run_dir / CHECKPOINTS
    final = root / f"step-{state.step:07d}"
    tmp = root / f"{TMP_PREFIX}{final.name}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    generators = {name: g.get_state() for name, g in vars(gens).items()}
    generators["torch_rng"] = torch.get_rng_state()
    save_safetensors(generators, tmp / GENERATORS_FILE.format(accelerator.process_index))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        payload = {"state": asdict(state), "scheduler": scheduler.state_dict(), "fingerprint": fingerprint_}
        (tmp / STATE_FILE).write_text(json.dumps(payload, indent=2))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in complete_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def complete_checkpoints(run_dir: Path) -> List[Path]:
    """Finished checkpoints of a run, oldest first (a half-written one has no trainer_state.json)."""
    root = Path(run_dir) / CHECKPOINTS
    found = [p for p in root.glob("step-*") if (p / STATE_FILE).is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: p.name)


def resolve(resume_from: str, run_dir: Path) -> Path:
    """`latest` -> the newest complete checkpoint of this run dir; otherwise the folder given."""
    if resume_from == "latest":
        found = complete_checkpoints(run_dir)
        if not found:
            raise CheckpointError(f"resume_from=latest: no complete checkpoint under {run_dir / CHECKPOINTS}; "
                                  "pass hydra.run.dir=<the run to resume>")
        return found[-1]
    path = Path(resume_from)
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(f"resume_from={resume_from}: not a complete Side-Step checkpoint (no {STATE_FILE})")
    return path


def read_state(checkpoint: Path) -> dict:
    try:
        payload = json.loads((checkpoint / STATE_FILE).read_text())
        TrainerState(**payload["state"])
        return payload
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{checkpoint / STATE_FILE}: unreadable ({type(err).__name__}); "
                              "resume from an older checkpoint") from None


def mismatches(saved: dict, current: dict) -> List[str]:
    return [f"{key}: checkpoint has {saved.get(key)!r}, this run has {value!r}"
            for key, value in current.items() if saved.get(key) != value]


def load_checkpoint(accelerator: Accelerator, checkpoint: Path, gens: StepGenerators, scheduler) -> TrainerState:
    """Restore everything `save_checkpoint` wrote; any unreadable file stops with its name."""
    payload = read_state(checkpoint)
    generators = _read_safetensors(checkpoint / GENERATORS_FILE.format(accelerator.process_index))
    _check_pickles(checkpoint)
    accelerator.load_state(str(checkpoint))
    if not torch.equal(torch.get_rng_state(), generators["torch_rng"]):
        raise CheckpointError(f"{checkpoint}: Accelerate could not restore the random states (random_states_*.pkl)")
    for name, gen in vars(gens).items():
        gen.set_state(generators[name])
    scheduler.load_state_dict(payload["scheduler"])
    return TrainerState(**payload["state"])


def load_lora_only(model: torch.nn.Module, checkpoint: Path) -> int:
    """`resume.strict=false`: take the LoRA tensors whose names and shapes fit, nothing else. Returns how many."""
    saved = _read_safetensors(checkpoint / LORA_FILE)
    current = get_peft_model_state_dict(model)
    fitting = {k: v for k, v in saved.items() if k in current and current[k].shape == v.shape}
    set_peft_model_state_dict(model, fitting)
    return len(fitting)


def _read_safetensors(path: Path) -> Dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: unreadable ({err}); resume from an older checkpoint") from None


def _check_pickles(checkpoint: Path) -> None:
    """Open every pickle-format file the way Accelerate will (`weights_only=True`), so a tampered or truncated
    one is named here instead of failing deep inside `load_state` (or, for RNG files, only being logged)."""
    from accelerate.utils import load

    for path in sorted([*checkpoint.glob("*.bin"), *checkpoint.glob("*.pkl")]):
        try:
            load(path, map_location="cpu")
        except Exception as err:  # UnpicklingError for a payload, RuntimeError/EOFError for a truncated file
            raise CheckpointError(f"{path}: refused to load ({type(err).__name__}: {str(err).splitlines()[0][:120]}); "
                                  "resume from an older checkpoint") from None
