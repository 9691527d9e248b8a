"""The training recipe, top to bottom, once `set_up_run` has settled the data and the plan: `set_up_training`
(frozen DiT + adapter -> optimizer -> (resume)) -> the loop -> adapter. It asks nothing and prints nothing: the
caller passes in the progress display.

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

from sidestep.adapters.attach import save_adapter
from sidestep.data.loader import release_workers
from sidestep.errors import SidestepError
from sidestep.run_status import RunStatus
from sidestep.training import checkpoint as ckpt
from sidestep.training.adapter_facts import at_step
from sidestep.training.ema import AdapterEma, mark_formats
from sidestep.training.evaluation import Evaluation
from sidestep.training.flow_matching import flow_matching_loss
from sidestep.training.interrupts import StopRequest
from sidestep.training.live_samples import LiveSampler
from sidestep.training.setup import RunSetup, Training, set_up_training
from sidestep.training.step_adapters import BEST_ADAPTER, card_samples, keep_step_adapter
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
    best_val_loss: Optional[float] = None  # the lowest held-out loss, the best checkpoint's
    stop_reason: Optional[str] = None  # why the run ended before its last step (early stopping)
    adapter_dir: Optional[Path] = None

    def objective(self, early_stop: bool) -> float:
        """What a sweeper minimises: the held-out loss when there is one (with early stopping the best, whose
        checkpoint is kept, not the last patience-worth of worse ones), else the smoothed training loss."""
        if self.val_loss is None:
            return self.final_loss
        return self.best_val_loss if early_stop else self.val_loss


class StepProgress(Protocol):
    """The caller's display of training: entered around the steps, moved to the first step (a resume), and told
    every optimizer step's numbers."""

    def __enter__(self) -> "StepProgress": ...
    def __exit__(self, *exc) -> None: ...
    def start_at(self, step: int) -> None: ...
    def update(self, step: int, epoch: int, loss: float, lr: float) -> None: ...


def fit(run: RunSetup, progress: StepProgress, on_start: Optional[Callable[[Optional[Path]], None]] = None
        ) -> FitResult:
    """Train the adapter as `run.cfg` says and write it to `run_dir/adapter/`. `on_start(resumed_from)` is called
    once the checkpoint (if any) is loaded."""
    training = set_up_training(run)
    try:
        (on_start or (lambda resumed_from: None))(run.resume_dir)
        return _loop(run, training, progress)
    finally:
        release_workers(training.loader)  # Accelerate's copy of `run.loader`, with workers of its own


def _loop(run: RunSetup, training: Training, progress: StepProgress) -> FitResult:
    """The steps, until `total_steps` or a stop request; then the adapter, its samples and the report."""
    cfg, run_dir, accelerator, tr = run.cfg, run.run_dir, run.accelerator, run.cfg.trainer
    held_out, total_steps, resume_dir = run.held_out, run.total_steps, run.resume_dir
    transformer, optimizer, scheduler, params = training.transformer, training.optimizer, training.scheduler, training.params
    loader, update, gens, state = training.loader, training.update, training.gens, training.state
    null_emb, settings, batches_per_epoch = training.null_emb, training.settings, len(loader)
    ema = AdapterEma(accelerator.unwrap_model(transformer), tr.ema.decay, tr.ema.device)  # from the weights resumed
    evaluation = Evaluation(cfg, held_out, ema, accelerator)
    if run.exact_resume:
        ema.load(resume_dir)
        evaluation.load(resume_dir)
    ema.register_hooks(accelerator)  # each checkpoint holds the EMA and the held-out record
    evaluation.register_hooks(accelerator)
    if accelerator.is_main_process:  # the best step keeps a loadable adapter too, as every sampled step does
        evaluation.on_new_best.append(lambda step, _checkpoint: _keep_best(run, transformer, ema, step))

    def save() -> Path:
        state.smoothed_loss = None if smoothed is None else float(smoothed)
        state.first_loss = None if first is None else float(first)
        return ckpt.save_checkpoint(accelerator, run_dir, state, gens, scheduler, run.fingerprint, tr.keep_checkpoints)

    logger = TrainingLogger(accelerator, cfg, tr.log_every, tr.log_heavy_every)
    sampler = LiveSampler(cfg, run.parts, run_dir, accelerator, logger.writer, run.dtype, run.facts)
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
        while state.step < total_steps and evaluation.stop_reason is None:
            batches = accelerator.skip_first_batches(loader, state.batch_in_epoch) if state.batch_in_epoch else loader
            batches.set_epoch(state.epoch)  # Accelerate's loader passes it to our sampler; it would count on its own
            for batch in batches:
                state.batch_in_epoch += 1
                names += batch["names"]
                with accelerator.accumulate(transformer):
                    loss, timesteps = _guard_oom(tr, cfg.data.crop_seconds, lambda: flow_matching_loss(transformer, batch, null_emb, settings, gens))
                    accelerator.backward(loss)
                    finite = True
                    if accelerator.sync_gradients:
                        logger.layer_gradients(state.step + 1, transformer)
                        grad_norm = accelerator.clip_grad_norm_(params, max_grad_norm)
                        finite = bool(torch.isfinite(grad_norm))  # one scalar read per optimizer step
                        if finite:
                            update()
                            ema.update()
                        optimizer.optimizer.zero_grad(set_to_none=True)
                window.append(loss.detach())
                logger.add_timesteps(timesteps)
                if not accelerator.sync_gradients:
                    continue

                # One optimizer step is complete (or skipped as non-finite). Losses stay on the device until logged.
                if not finite:
                    _nonfinite(tr.on_nonfinite, state, names, last_checkpoint)
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
                progress.update(state.step, state.epoch, shown_loss, lr)
                status.update(state.step, state.epoch, shown_loss, lr)

                # End-of-epoch and end-of-run work happens here, inside the step, so the last epoch gets it too.
                epoch_done = state.batch_in_epoch == batches_per_epoch
                if epoch_done:
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                finished = state.step >= total_steps
                new_best = False
                if evaluation.due(state.step, state.epoch if epoch_done else None, finished):
                    new_best = evaluation(transformer, state.step)
                    status.held_out(evaluation.record)
                    finished = finished or evaluation.stop_reason is not None
                stopping = _agreed(accelerator, stop.requested)
                if (stopping or finished or new_best or (save_every_steps and state.step % save_every_steps == 0)
                        or (epoch_done and state.epoch % tr.save_every == 0)):
                    last_checkpoint = save()
                    status.checkpoint(last_checkpoint)
                if new_best:
                    evaluation.announce_best(state.step, last_checkpoint)
                if stopping:
                    raise stop.interrupted(run_dir, last_checkpoint)
                with ema.swapped_in():
                    sampler.after_step(transformer, state.step, state.epoch if epoch_done else None)
                if finished:
                    break

    accelerator.wait_for_everyone()
    _check_replicas_agree(accelerator, params)
    result.steps = state.step
    result.first_loss = float("nan") if first is None else float(first)
    result.final_loss = float("nan") if smoothed is None else float(smoothed)
    result.val_loss, result.best_val_loss = evaluation.record.loss, evaluation.record.best_loss
    result.stop_reason = evaluation.stop_reason
    if accelerator.is_main_process:
        result.adapter_dir = run_dir / "adapter"
        with ema.swapped_in():  # the adapter, its samples and the page are the EMA's when it is on
            sampler.finish(transformer, state.step)  # the final adapter's samples first: its model card links them
            save_adapter(accelerator.unwrap_model(transformer), result.adapter_dir, cfg.run.name, cfg.export.dtype,
                         at_step(run.facts, state.step), card_samples(run_dir, state.step, result.adapter_dir))
            mark_formats(cfg, result.adapter_dir)
            status.finished(result.adapter_dir, result.stop_reason)
            sampler.write_page()  # the run's report.html
        log.info("adapter written to %s (smoothed loss %.4f, first %.4f%s%s)", result.adapter_dir, result.final_loss,
                 result.first_loss, "" if result.val_loss is None else f", held-out {result.val_loss:.4f}"
                 + ("" if result.stop_reason is None else f"; {result.stop_reason}"),
                 f", {state.skipped_nonfinite} non-finite steps skipped" if state.skipped_nonfinite else "")
    logger.close()
    accelerator.wait_for_everyone()  # the others wait while the main process writes the adapter, then all leave together
    accelerator.end_training()
    return result


def _keep_best(run: RunSetup, transformer, ema: AdapterEma, step: int) -> None:
    """`<run>/adapters/best/`: the adapter of the lowest held-out loss so far (the EMA's when it is on, as scored)."""
    with ema.swapped_in():
        keep_step_adapter(run.accelerator.unwrap_model(transformer), run.run_dir, step, run.cfg.run.name,
                          run.cfg.export.dtype, run.facts, target=run.run_dir / BEST_ADAPTER)


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


def _nonfinite(on_nonfinite: str, state: ckpt.TrainerState, names: List[str], last_checkpoint: Optional[Path]
               ) -> None:
    where = f"step {state.step + 1} (samples: {', '.join(sorted(set(names)))})"
    if on_nonfinite == "error":
        raise SidestepError(f"non-finite loss or gradient at {where}; last good checkpoint: {last_checkpoint or 'none'}; "
                            "trainer.on_nonfinite=skip skips such steps")
    state.skipped_nonfinite += 1
    log.warning("skipped non-finite %s (%d so far)", where, state.skipped_nonfinite)


def _guard_oom(tr: DictConfig, crop_seconds: Optional[float], step):
    try:
        return step()
    except torch.OutOfMemoryError:
        raise SidestepError(
            f"out of GPU memory (batch {tr.batch_size}, crop {crop_seconds or 'whole songs'} s, precision "
            f"{tr.precision}, gradient checkpointing {'on' if tr.gradient_checkpointing else 'off'}); try a smaller "
            "vram= profile, trainer.gradient_checkpointing=true, optimizer=adamw8bit or a shorter data.crop_seconds") from None
