"""The training recipe, top to bottom, once `prepare` has settled the data and the plan: frozen DiT + LoRA ->
optimizer -> (resume) -> loop -> adapter. It asks nothing and prints nothing: the caller passes in the progress display.

Accelerate owns devices, precision, accumulation, clipping and several processes; this file owns the order of
things, when checkpoints are written, and what happens on a signal or a non-finite step.
"""

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Protocol

import torch
from omegaconf import DictConfig
from torch.optim.lr_scheduler import LambdaLR

from sidestep.adapters.attach import adapter_config, add_adapter, save_adapter
from sidestep.config.build import build
from sidestep.errors import SidestepError
from sidestep.library_output import prints_to_debug_log
from sidestep.models.source import model_source
from sidestep.run_status import RunStatus
from sidestep.training import checkpoint as ckpt
from sidestep.training.fast_paths import compile_transformer, use_attention_backend
from sidestep.training.flow_matching import (
    StepGenerators,
    StepSettings,
    flow_matching_loss,
)
from sidestep.training.adapter_facts import at_step
from sidestep.training.interrupts import StopRequest
from sidestep.training.live_samples import LiveSampler
from sidestep.training.prepare import PreparedRun
from sidestep.training.step_adapters import card_samples
from sidestep.training.tensorboard import TrainingLogger, applied_lr

log = logging.getLogger(__name__)
LOSS_SMOOTHING = 0.9


@dataclass
class FitResult:
    final_loss: float  # exponentially smoothed training loss at the last step
    first_loss: float
    steps: int
    step_seconds: List[float] = field(default_factory=list)  # wall time of each optimizer step run here
    val_loss: Optional[float] = None  # held-out loss at fixed timesteps and noise (data.val_fraction > 0)
    adapter_dir: Optional[Path] = None


class StepProgress(Protocol):
    """The caller's display of training: entered around the steps, moved to the first step (a resume), and told
    every optimizer step's numbers."""

    def __enter__(self) -> "StepProgress": ...
    def __exit__(self, *exc) -> None: ...
    def start_at(self, step: int) -> None: ...
    def update(self, step: int, epoch: int, loss: float, lr: float) -> None: ...


def fit(run: PreparedRun, progress: StepProgress, on_start: Optional[Callable[[Optional[Path]], None]] = None
        ) -> FitResult:
    """Train a LoRA adapter as `run.cfg` says and write it to `run_dir/adapter/`. `on_start(resumed_from)` is called
    once the checkpoint (if any) is loaded."""
    cfg, run_dir, accelerator, tr = run.cfg, run.run_dir, run.accelerator, run.cfg.trainer
    loader, held_out, total_steps, resume_dir = run.loader, run.held_out, run.total_steps, run.resume_dir
    dtype, attention = run.dtype, run.attention

    # Model: frozen DiT in the compute dtype, fp32 LoRA on the chosen projections.
    dit = model_source(cfg.model).dit(dtype, accelerator.device)  # a quantized base is quantized on the device
    transformer = dit.transformer
    add_adapter(transformer, adapter_config(cfg), tr.seed)
    if tr.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    use_attention_backend(transformer, attention)
    compile_transformer(transformer, tr.compile, tr.compile_backend)
    transformer.to(accelerator.device)  # before the optimizer: fused kernels need its parameters on the device
    params = [p for p in transformer.parameters() if p.requires_grad]

    fused = {"fused": accelerator.device.type == "cuda"} if cfg.optimizer.get("fused", False) is None else {}
    with prints_to_debug_log():  # Prodigy prints "Using decoupled weight decay"
        optimizer = build(cfg.optimizer, **fused)(params)  # plain lists: its state loads weights_only
    scheduler = LambdaLR(optimizer, build(cfg.scheduler)(total_steps=total_steps))  # stepped once per update
    transformer, optimizer, loader = accelerator.prepare(transformer, optimizer, loader)
    # Accelerate's optimizer wrapper looks a package up twice and inspects a signature at every update (about 1.5 ms
    # of host time); without a gradient scaler it has nothing else to do there, so updates call the optimizer itself.
    update = optimizer.step if accelerator.scaler is not None else optimizer.optimizer.step
    batches_per_epoch = len(loader)
    ckpt.register_lora_hooks(accelerator, run.facts)
    null_emb = dit.null_condition_emb.to(accelerator.device)
    gens = StepGenerators.from_seed(tr.seed, accelerator.process_index)
    settings = StepSettings.from_config(cfg.timesteps, cfg.model)

    state = ckpt.TrainerState()
    if run.exact_resume:
        configured = {k: v for k, v in cfg.optimizer.items() if k not in ("_target_", "_partial_", "lr", "fused")}
        state = ckpt.load_checkpoint(accelerator, resume_dir, gens, scheduler, optimizer, batches_per_epoch, configured)
        log.info("resumed from %s at step %d (epoch %d, batch %d)", resume_dir, state.step, state.epoch + 1,
                 state.batch_in_epoch)
    elif resume_dir is not None:
        count = ckpt.load_lora_only(accelerator.unwrap_model(transformer), resume_dir)
        log.warning("resume.strict=false: loaded %d LoRA tensors from %s; optimizer, schedule and counters start fresh",
                    count, resume_dir)
    (on_start or (lambda resumed_from: None))(resume_dir)

    def save() -> Path:
        state.smoothed_loss = None if smoothed is None else float(smoothed)
        state.first_loss = None if first is None else float(first)
        return ckpt.save_checkpoint(accelerator, run_dir, state, gens, scheduler, run.fingerprint, tr.keep_checkpoints)

    logger = TrainingLogger(accelerator, cfg, tr.log_every, tr.log_heavy_every)
    sampler = LiveSampler(cfg, run_dir, accelerator, logger.writer, dtype, run.facts)
    max_grad_norm, log_every, save_every_steps = tr.max_grad_norm, tr.log_every, tr.save_every_steps
    smoothed = None if state.smoothed_loss is None else torch.tensor(state.smoothed_loss, device=accelerator.device)
    first = None if state.first_loss is None else torch.tensor(state.first_loss, device=accelerator.device)
    shown_loss, window, names = float("nan") if smoothed is None else float(smoothed), [], []
    result = FitResult(final_loss=float("nan"), first_loss=float("nan"), steps=state.step)
    last_checkpoint = resume_dir

    transformer.train()
    clock = time.perf_counter()
    with StopRequest() as stop, progress, \
            RunStatus(run_dir, total_steps, run.epochs, state.step, log_every, accelerator.is_main_process) as status:
        progress.start_at(state.step)
        while state.step < total_steps:
            batches = accelerator.skip_first_batches(loader, state.batch_in_epoch) if state.batch_in_epoch else loader
            batches.set_epoch(state.epoch)  # Accelerate's loader passes it to our sampler; it would count on its own
            for batch in batches:
                state.batch_in_epoch += 1
                names += batch["names"]
                with accelerator.accumulate(transformer):
                    loss, timesteps = _guard_oom(cfg, lambda: flow_matching_loss(transformer, batch, null_emb, settings, gens))
                    accelerator.backward(loss)
                    finite = True
                    if accelerator.sync_gradients:
                        logger.layer_gradients(state.step + 1, transformer)
                        grad_norm = accelerator.clip_grad_norm_(params, max_grad_norm)
                        finite = bool(torch.isfinite(grad_norm))  # one scalar read per optimizer step
                        if finite:
                            update()
                        optimizer.optimizer.zero_grad(set_to_none=True)
                window.append(loss.detach())
                logger.add_timesteps(timesteps)
                if not accelerator.sync_gradients:
                    continue

                # One optimizer step is complete (or skipped as non-finite). Losses stay on the device until logged.
                if not finite:
                    _nonfinite(cfg, state, names, last_checkpoint)
                else:
                    step_loss = torch.stack(window).mean()
                    first = step_loss if first is None else first
                    smoothed = step_loss if smoothed is None else LOSS_SMOOTHING * smoothed + (1 - LOSS_SMOOTHING) * step_loss
                window.clear()
                names = []
                lr = applied_lr(optimizer)  # before the scheduler moves on: what this update used
                scheduler.step()
                state.step += 1
                now = time.perf_counter()
                result.step_seconds.append(now - clock)
                clock = now
                if finite and (state.step % log_every == 0 or state.step == total_steps):
                    shown_loss = logger.scalars(state.step, smoothed, step_loss, grad_norm, lr)
                if held_out.enabled and (state.step % tr.log_heavy_every == 0 or state.step == total_steps):
                    with accelerator.autocast():
                        result.val_loss = held_out(transformer)
                    noise = {} if held_out.noise is None else {"loss/val_noise": held_out.noise}
                    accelerator.log({"loss/val": result.val_loss, **noise}, step=state.step)
                progress.update(state.step, state.epoch, shown_loss, lr)
                status.update(state.step, state.epoch, shown_loss, lr)

                # End-of-epoch and end-of-run work happens here, inside the step, so the last epoch gets it too.
                epoch_done = state.batch_in_epoch == batches_per_epoch
                if epoch_done:
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                finished = state.step >= total_steps
                stopping = _agreed(accelerator, stop.requested)
                if (stopping or finished or (save_every_steps and state.step % save_every_steps == 0)
                        or (epoch_done and state.epoch % tr.save_every == 0)):
                    last_checkpoint = save()
                    status.checkpoint(last_checkpoint)
                if stopping:
                    raise stop.interrupted(run_dir, last_checkpoint)
                sampler.after_step(transformer, state.step, state.epoch if epoch_done else None)
                if finished:
                    break

    accelerator.wait_for_everyone()
    _check_replicas_agree(accelerator, params)
    result.steps = state.step
    result.first_loss = float("nan") if first is None else float(first)
    result.final_loss = float("nan") if smoothed is None else float(smoothed)
    if accelerator.is_main_process:
        result.adapter_dir = run_dir / "adapter"
        sampler.finish(transformer, state.step)  # the final adapter's samples first: its model card links them
        save_adapter(accelerator.unwrap_model(transformer), result.adapter_dir, cfg.run.name, cfg.export.dtype,
                     at_step(run.facts, state.step), card_samples(run_dir, state.step, result.adapter_dir))
        status.finished(result.adapter_dir)
        sampler.write_page()  # the run's report.html
        log.info("adapter written to %s (smoothed loss %.4f, first %.4f%s%s)", result.adapter_dir, result.final_loss,
                 result.first_loss, "" if result.val_loss is None else f", held-out {result.val_loss:.4f}",
                 f", {state.skipped_nonfinite} non-finite steps skipped" if state.skipped_nonfinite else "")
    logger.close()
    accelerator.end_training()
    return result


def _agreed(accelerator, requested: bool) -> bool:
    """Stop when any process got the signal, all at the same step (checkpointing is collective)."""
    if accelerator.num_processes == 1:
        return requested
    flag = torch.tensor([float(requested)], device=accelerator.device)
    return bool(accelerator.reduce(flag, "sum") > 0)


def _check_replicas_agree(accelerator, params: List[torch.Tensor]) -> None:
    """With several processes, every replica must end with the same LoRA weights; a silent desync is a bug."""
    if accelerator.num_processes == 1:
        return
    checksum = torch.stack([p.detach().double().sum() for p in params]).sum().reshape(1).to(accelerator.device)
    sums = accelerator.gather(checksum)
    if not torch.all(sums == sums[0]):
        raise SidestepError(f"the {accelerator.num_processes} processes ended with different LoRA weights: {sums.tolist()}")
    log.info("LoRA weights identical on all %d processes (checksum %.10g)", accelerator.num_processes, float(sums[0]))


def _nonfinite(cfg: DictConfig, state: ckpt.TrainerState, names: List[str], last_checkpoint: Optional[Path]) -> None:
    where = f"step {state.step + 1} (samples: {', '.join(sorted(set(names)))})"
    if cfg.trainer.on_nonfinite == "error":
        raise SidestepError(f"non-finite loss or gradient at {where}; last good checkpoint: {last_checkpoint or 'none'}; "
                            "trainer.on_nonfinite=skip skips such steps")
    state.skipped_nonfinite += 1
    log.warning("skipped non-finite %s (%d so far)", where, state.skipped_nonfinite)


def _guard_oom(cfg: DictConfig, step):
    try:
        return step()
    except torch.OutOfMemoryError:
        tr = cfg.trainer
        raise SidestepError(
            f"out of GPU memory (batch {tr.batch_size}, crop {cfg.data.crop_seconds or 'whole songs'} s, precision "
            f"{tr.precision}, gradient checkpointing {'on' if tr.gradient_checkpointing else 'off'}); try a smaller "
            "vram= profile, trainer.gradient_checkpointing=true, optimizer=adamw8bit or a shorter data.crop_seconds") from None
