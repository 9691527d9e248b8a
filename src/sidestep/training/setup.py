"""Setting a run up, in two halves. `set_up_run`: everything settled before any weight is loaded (devices, the
claimed run dir, the parts, the data, the checkpoint to resume from, the final config and the plan the user
confirms). `set_up_training`: once confirmed, the frozen DiT with its adapter, the optimizer, the LR schedule
and the resumed state, handed to the loop (`loop.fit`).
"""

import contextlib
import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from omegaconf import DictConfig, OmegaConf
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from sidestep.adapters.attach import add_adapter
from sidestep.data.loader import make_loader, open_dataset, release_workers
from sidestep.library_output import prints_to_debug_log
from sidestep.models.dit import DiT
from sidestep.models.source import ModelSource
from sidestep.training import checkpoint as ckpt
from sidestep.training.accelerator import build_accelerator, weight_dtype
from sidestep.training.adapter_facts import run_facts
from sidestep.training.fast_paths import (
    attention_backend,
    check_compile_backend,
    compile_transformer,
    use_attention_backend,
)
from sidestep.training.fingerprint import fingerprint as run_fingerprint
from sidestep.training.fingerprint import mismatches
from sidestep.training.flow_matching import StepGenerators, StepSettings
from sidestep.training.job_state import active_attention, fresh_process_state
from sidestep.training.live_samples import sample_duration
from sidestep.training.parts import RunParts, build_parts
from sidestep.training.plan import RunPlan, run_plan, schedule_lengths, write_mix
from sidestep.training.run_dir import claimed
from sidestep.training.validation import HeldOutLoss

log = logging.getLogger(__name__)


@dataclass
class RunSetup:
    cfg: DictConfig  # final and read-only: what the run record holds
    run_dir: Path  # the main process's, on every process
    accelerator: Accelerator
    parts: RunParts
    loader: DataLoader
    held_out: HeldOutLoss
    total_steps: int
    epochs: int
    fingerprint: dict
    resume_dir: Optional[Path]
    exact_resume: bool  # False: `resume.strict=false` takes only the checkpoint's LoRA weights
    dtype: torch.dtype  # of the frozen base weights
    attention: str
    plan: RunPlan
    facts: dict = field(default_factory=dict)  # what its adapters' headers say (training/adapter_facts.py)


@contextlib.contextmanager
def set_up_run(cfg: DictConfig, run_dir: Path, model: ModelSource, make_dataset: Optional[Callable[[], object]] = None,
               save_config: Optional[Callable[[DictConfig], None]] = None) -> Iterator[RunSetup]:
    """Build the accelerator and hold the run dir while the block runs. `model`: the source `cfg` was settled with.
    `make_dataset` (the caller's preprocessing of songs) runs on the main process first, then on the others, before
    each opens the dataset. `save_config(cfg)` writes the run record once every value is settled; from then on
    the run's config (a copy: the caller's stays as it was) is read-only."""
    with fresh_process_state():  # a sweep's earlier job left nothing behind
        accelerator = build_accelerator(cfg.trainer, run_dir)
        run_dir = Path(broadcast_object_list([str(run_dir)])[0])  # several processes: the main one's run dir for all
        with claimed(run_dir, cfg.resume_from, accelerator.is_main_process):
            run = _set_up(copy.deepcopy(cfg), run_dir, accelerator, model, make_dataset, save_config)
            try:
                with active_attention(run.attention):
                    yield run
            finally:
                release_workers(run.loader, run.held_out.loader)


def _set_up(cfg: DictConfig, run_dir: Path, accelerator: Accelerator, model: ModelSource,
            make_dataset: Optional[Callable[[], object]], save_config: Optional[Callable[[DictConfig], None]]
            ) -> RunSetup:
    tr = cfg.trainer
    set_seed(tr.seed)
    dtype = weight_dtype(accelerator.mixed_precision)
    attention = attention_backend(tr.attention_backend, accelerator.device, dtype)  # refused before any data is made
    check_compile_backend(tr.compile, tr.compile_backend)
    parts = build_parts(cfg, model)

    with accelerator.main_process_first():  # the main process makes the data (songs or synthetic) alone
        if make_dataset is not None:
            make_dataset()
        dataset = open_dataset(cfg, parts.data)
    cfg.sample.duration = sample_duration(cfg.sample.duration, dataset.frames)  # the last value the data settles
    if save_config is not None:
        save_config(cfg)
    OmegaConf.set_readonly(cfg, True)  # the record holds every value the run uses

    train_set, held_out_set = dataset.split(cfg.data.val_fraction, tr.seed)
    loader, _ = make_loader(cfg, train_set, accelerator.device.type)
    held_out = HeldOutLoss(cfg, held_out_set, accelerator.device)
    steps_per_epoch, total_steps, epochs = schedule_lengths(tr, len(loader), accelerator.num_processes)

    # Resume: refuse a checkpoint of a different setup before anything heavy happens.
    fingerprint = run_fingerprint(cfg, model, dataset)
    resume_dir = ckpt.checkpoint_path(cfg.resume_from, run_dir) if cfg.resume_from else None
    exact_resume = resume_dir is not None and _fits(resume_dir, fingerprint, cfg.resume.strict)

    plan = run_plan(cfg, parts, run_dir, accelerator, train_set, held_out_set, steps_per_epoch, epochs, total_steps,
                    f"resuming {resume_dir}" if resume_dir else "fresh start", attention)
    if accelerator.is_main_process:
        write_mix(run_dir, train_set, held_out_set)
    return RunSetup(cfg, run_dir, accelerator, parts, loader, held_out, total_steps, epochs, fingerprint, resume_dir,
                    exact_resume, dtype, attention, plan, run_facts(cfg, plan, fingerprint, parts.data))


def _fits(checkpoint: Path, fingerprint: dict, strict: bool) -> bool:
    """True when the checkpoint belongs to this setup; a mismatch stops the run unless `resume.strict=false`."""
    problems = mismatches(ckpt.read_state(checkpoint)["fingerprint"], fingerprint)
    if not problems:
        return True
    if strict:
        raise ckpt.CheckpointError(f"{checkpoint} does not fit this run (resume.strict=false loads its LoRA "
                                   "weights only):\n  " + "\n  ".join(problems))
    log.warning("checkpoint %s differs from this run:\n  %s", checkpoint, "\n  ".join(problems))
    return False


@dataclass
class Training:
    """What the loop works on, built by `set_up_training`."""

    dit: DiT
    transformer: torch.nn.Module  # wrapped by Accelerate
    params: List[torch.nn.Parameter]  # the adapter's, trainable
    optimizer: torch.optim.Optimizer  # Accelerate's wrapper
    update: Callable[[], None]  # one optimizer update (see `set_up_training`)
    scheduler: LambdaLR  # stepped once per update
    loader: DataLoader  # Accelerate's
    gens: StepGenerators
    settings: StepSettings
    null_emb: torch.Tensor
    state: ckpt.TrainerState  # fresh, or the resumed checkpoint's


def set_up_training(run: RunSetup) -> Training:
    """The frozen DiT in the compute dtype with its fp32 adapter, the optimizer and LR schedule, on the device,
    and the checkpoint's state when resuming."""
    cfg, accelerator, parts, tr = run.cfg, run.accelerator, run.parts, run.cfg.trainer
    dit = parts.model.dit(run.dtype, accelerator.device)  # a quantized base is quantized on the device
    transformer = dit.transformer
    add_adapter(transformer, parts.adapter_config, tr.seed)
    if tr.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    use_attention_backend(transformer, run.attention)
    compile_transformer(transformer, tr.compile, tr.compile_backend)
    transformer.to(accelerator.device)  # before the optimizer: fused kernels need its parameters on the device
    params = [p for p in transformer.parameters() if p.requires_grad]

    fused = {"fused": accelerator.device.type == "cuda"} if cfg.optimizer.get("fused", False) is None else {}
    with prints_to_debug_log():  # Prodigy prints "Using decoupled weight decay"
        optimizer = parts.optimizer(params, **fused)  # plain lists: its state loads weights_only
    scheduler = LambdaLR(optimizer, parts.schedule(total_steps=run.total_steps))
    transformer, optimizer, loader = accelerator.prepare(transformer, optimizer, run.loader)
    # Accelerate's optimizer wrapper looks a package up twice and inspects a signature at every update (about 1.5 ms
    # of host time); without a gradient scaler it has nothing else to do there, so updates call the optimizer itself.
    update = optimizer.step if accelerator.scaler is not None else optimizer.optimizer.step
    ckpt.register_lora_hooks(accelerator, run.facts)
    gens = StepGenerators.from_seed(tr.seed, accelerator.process_index)
    training = Training(dit, transformer, params, optimizer, update, scheduler, loader, gens,
                        StepSettings.from_config(cfg.timesteps, cfg.model), dit.null_condition_emb.to(accelerator.device),
                        ckpt.TrainerState())
    _resume(run, training)
    return training


def _resume(run: RunSetup, training: Training) -> None:
    """Everything of the checkpoint (`exact_resume`), or its adapter weights only (`resume.strict=false`)."""
    if run.exact_resume:
        configured = {k: v for k, v in run.cfg.optimizer.items() if k not in ("_target_", "_partial_", "lr", "fused")}
        training.state = ckpt.load_checkpoint(run.accelerator, run.resume_dir, training.gens, training.scheduler,
                                              training.optimizer, len(training.loader), configured)
        state = training.state
        log.info("resumed from %s at step %d (epoch %d, batch %d)", run.resume_dir, state.step, state.epoch + 1,
                 state.batch_in_epoch)
    elif run.resume_dir is not None:
        count = ckpt.load_lora_only(run.accelerator.unwrap_model(training.transformer), run.resume_dir)
        log.warning("resume.strict=false: loaded %d LoRA tensors from %s; optimizer, schedule and counters start fresh",
                    count, run.resume_dir)
