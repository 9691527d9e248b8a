"""Checkpoints that resume exactly, written so a crash never damages the last good one.

A checkpoint is `<run>/checkpoints/step-NNNNNNN/`:
- Accelerate's `save_state`: optimizer state and every RNG (python, numpy, torch, CUDA); Accelerate loads these
  with `weights_only=True`. Its model weights are replaced (save/load hooks) by the LoRA tensors alone.
- `adapter_model.safetensors`: the LoRA weights (diffusers names).
- `generators_<process>.safetensors`: each process's step generators (timesteps, noise, condition dropout) and a
  copy of its torch RNG state, so a silently failed RNG restore in Accelerate is caught.
- `trainer_state.json`, written last: counters, position in the epoch, scheduler state, smoothed loss, config
  fingerprint, the sha256 of every other file and a digest of itself (see `checkpoint_check`).
It is built under `checkpoints/.tmp-step-NNNNNNN/`, flushed to disk and renamed into place; the oldest beyond
`keep` are pruned. What a user exports from a checkpoint lives in `<run>/adapters/step-NNNNNNN/`, out of their way,
beside the adapters each round of samples keeps (training/step_adapters.py).
"""

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch
from accelerate import Accelerator
from peft import get_peft_model_state_dict, set_peft_model_state_dict

from sidestep.adapters.files import file_header
from sidestep.adapters.kind import kind_of
from sidestep.atomic import publish, save_safetensors
from sidestep.errors import first_line
from sidestep.training.checkpoint_check import (
    LORA_FILE,
    STATE_FILE,
    CheckpointError,
    check_fits_model,
    file_digests,
    payload_digest,
    read_state,
    read_tensors,
    verify,
)
from sidestep.training.fingerprint import mismatches
from sidestep.training.flow_matching import StepGenerators
from sidestep.training.restored_states import check_generators, check_optimizer, check_schedule
from sidestep.write_errors import writing

log = logging.getLogger(__name__)
GENERATORS_FILE = "generators_{}.safetensors"  # one per process
CHECKPOINTS = "checkpoints"
EXPORTS = "adapters"  # the step adapters' folder (step_adapters.ADAPTERS): one place for a step's adapter
TMP_PREFIX = ".tmp-"

__all__ = ["CheckpointError", "TrainerState", "complete_checkpoints", "load_checkpoint", "load_lora_only",
           "mismatches", "read_state", "register_lora_hooks", "resolve", "save_checkpoint"]


@dataclass
class TrainerState:
    """Where training is: `batch_in_epoch` batches of `epoch` are done (0 = the epoch has not started)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    smoothed_loss: Optional[float] = None
    first_loss: Optional[float] = None
    skipped_nonfinite: int = 0


def checkpoint_header(config) -> dict:
    return file_header(kind_of(config), config, "checkpoint", "fp32")


def register_lora_hooks(accelerator: Accelerator, facts: Optional[Dict[str, str]] = None) -> None:
    """Accelerate saves and loads the LoRA tensors only, never the frozen base model. Loading takes them only if
    the checkpoint holds exactly the model's LoRA tensors (a missing one would otherwise stay silently at zero).
    `facts` (training/adapter_facts.py) go into the LoRA file's header, for `sidestep.export` to carry on."""

    def save_hook(models, weights, output_dir):
        for model in models:
            save_safetensors({k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()},
                             Path(output_dir) / LORA_FILE, {**checkpoint_header(model.peft_config["default"]),
                                                            **(facts or {})})
        weights.clear()

    def load_hook(models, input_dir):
        while models:
            model = models.pop()
            set_peft_model_state_dict(model, check_fits_model(Path(input_dir), get_peft_model_state_dict(model)))

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
    try:
        with writing(final):  # a full disk: one OSError naming the checkpoint, whatever was writing
            _write_checkpoint(accelerator, tmp, final, state, gens, scheduler, fingerprint_)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # the older checkpoints stay; the space goes back to the run's status
        raise
    if accelerator.is_main_process:
        for old in complete_checkpoints(run_dir)[:-keep]:
            _prune(old)
    accelerator.wait_for_everyone()
    return final


def _write_checkpoint(accelerator: Accelerator, tmp: Path, final: Path, state: TrainerState, gens: StepGenerators,
                      scheduler, fingerprint_: dict) -> None:
    accelerator.save_state(str(tmp))
    generators = {name: g.get_state() for name, g in vars(gens).items()}
    generators["torch_rng"] = torch.get_rng_state()
    save_safetensors(generators, tmp / GENERATORS_FILE.format(accelerator.process_index))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        payload = {"state": asdict(state), "scheduler": scheduler.state_dict(), "fingerprint": fingerprint_,
                   "files": file_digests(tmp)}
        payload["digest"] = payload_digest(payload)
        (tmp / STATE_FILE).write_text(json.dumps(payload, indent=2))
        if final.exists():
            shutil.rmtree(final)
        publish(tmp, final)


def export_dir(checkpoint: Path) -> Path:
    """Where `sidestep.export` writes a checkpoint's adapter: `<run>/adapters/step-N/`, where each sampled step's
    adapter is kept too, never inside the checkpoint, which training deletes once `trainer.keep_checkpoints` newer
    ones exist."""
    return checkpoint.parent.parent / EXPORTS / checkpoint.name


def _prune(checkpoint: Path) -> None:
    """Delete an old checkpoint. An adapter exported into it (earlier versions of `sidestep.export` wrote
    `<checkpoint>/adapter/`) is moved to `export_dir` first, and the log says where; if that place is taken, the
    checkpoint is kept."""
    exported, target = checkpoint / "adapter", export_dir(checkpoint)
    if exported.is_dir():
        if target.exists():
            log.warning("kept %s: it holds an exported adapter/ and %s is taken", checkpoint, target)
            return
        target.parent.mkdir(exist_ok=True)
        exported.rename(target)
        log.warning("moved the adapter exported into %s to %s before deleting the checkpoint", checkpoint, target)
    shutil.rmtree(checkpoint, ignore_errors=True)


def complete_checkpoints(run_dir: Path) -> List[Path]:
    """Finished checkpoints of a run, oldest first (a half-written one has no trainer_state.json)."""
    root = Path(run_dir) / CHECKPOINTS
    found = [p for p in root.glob("step-*") if (p / STATE_FILE).is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: p.name)


def resolve(resume_from: str, run_dir: Path) -> Path:
    """The checkpoint to resume from, verified. `latest`: the newest good one of this run dir; a damaged newer one
    is named and passed over. A folder given by path must itself be good."""
    if resume_from != "latest":
        path = Path(resume_from)
        if not (path / STATE_FILE).is_file():
            raise CheckpointError(f"resume_from={resume_from}: not a complete Side-Step checkpoint (no {STATE_FILE})")
        verify(path)
        return path
    found = complete_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"resume_from=latest: no complete checkpoint under {run_dir / CHECKPOINTS}; "
                              "pass hydra.run.dir=<the run to resume>")
    problems = []
    for path in reversed(found):
        try:
            verify(path)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        for problem in problems:
            log.warning("passing over a damaged checkpoint: %s", problem)
        if problems:
            log.warning("resuming from %s, the newest good checkpoint", path.name)
        return path
    raise CheckpointError(f"resume_from=latest: all {len(found)} checkpoints of {run_dir} are damaged, the newest: "
                          f"{problems[0]}")


def load_checkpoint(accelerator: Accelerator, checkpoint: Path, gens: StepGenerators, scheduler,
                    optimizer: torch.optim.Optimizer, batches_per_epoch: int, settings: Dict[str, object]
                    ) -> TrainerState:
    """Restore everything `save_checkpoint` wrote (the folder was verified by `resolve`), once each state is known
    to fit this run's objects; `settings` are the optimizer's configured hyperparameters."""
    payload = read_state(checkpoint)
    state = TrainerState(**payload["state"])
    if state.batch_in_epoch >= batches_per_epoch:
        raise CheckpointError(f"{checkpoint / STATE_FILE}: batch_in_epoch {state.batch_in_epoch} is past this run's "
                              f"{batches_per_epoch} batches per epoch; resume from another checkpoint")
    check_schedule(checkpoint, payload["scheduler"], scheduler.state_dict(), state.step)
    generators_file = checkpoint / GENERATORS_FILE.format(accelerator.process_index)
    generators = read_tensors(generators_file)
    check_generators(generators_file, generators, {"torch_rng": torch.get_rng_state(),
                                                   **{name: g.get_state() for name, g in vars(gens).items()}})
    try:
        accelerator.load_state(str(checkpoint))
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as err:  # a state torch cannot take
        raise CheckpointError(f"{checkpoint}: its optimizer or random state does not fit this run "
                              f"({type(err).__name__}: {first_line(err)}); resume from another checkpoint") from None
    check_optimizer(checkpoint, optimizer, settings, payload["scheduler"]["_last_lr"])
    if not torch.equal(torch.get_rng_state(), generators["torch_rng"]):
        raise CheckpointError(f"{checkpoint}: Accelerate could not restore the random states (random_states_*.pkl)")
    for name, gen in vars(gens).items():
        gen.set_state(generators[name])
    scheduler.load_state_dict(payload["scheduler"])
    return state


def load_lora_only(model: torch.nn.Module, checkpoint: Path) -> int:
    """`resume.strict=false`: take the LoRA tensors whose names and shapes fit, nothing else. Returns how many."""
    saved = read_tensors(checkpoint / LORA_FILE)
    current = get_peft_model_state_dict(model)
    fitting = {k: v for k, v in saved.items() if k in current and current[k].shape == v.shape}
    set_peft_model_state_dict(model, fitting)
    return len(fitting)
