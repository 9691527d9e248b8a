"""The training recipe, top to bottom: data -> frozen DiT + LoRA -> optimizer -> loop -> adapter.

Accelerate owns devices, precision, accumulation, clipping and (later) several processes; this file owns
the order of things and nothing else.
"""

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import torch
from accelerate.utils import set_seed
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from sidestep.config import LATENT_FPS
from sidestep.data.collate import CropCollate
from sidestep.data.dataset import LatentDataset
from sidestep.data.sampler import EpochSampler
from sidestep.data.synthetic import synthetic_dataset
from sidestep.models.dit import build_dit, sample_shape
from sidestep.training.accelerator import build_accelerator, weight_dtype
from sidestep.training.flow_matching import StepGenerators, StepSettings, flow_matching_loss
from sidestep.training.lora import add_lora, lora_parameter_count, save_adapter
from sidestep.training.tensorboard import TrainingLogger
from sidestep.ui.console import is_plain
from sidestep.ui.progress import TrainingProgress
from sidestep.ui.summary import RunPlan, confirm, show

log = logging.getLogger(__name__)
LOSS_SMOOTHING = 0.9


@dataclass
class FitResult:
    final_loss: float  # exponentially smoothed training loss at the last step
    first_loss: float
    steps: int
    step_seconds: List[float] = field(default_factory=list)  # wall time of each optimizer step
    adapter_dir: Optional[Path] = None


def fit(cfg: DictConfig, run_dir: Path) -> Optional[FitResult]:
    """Train a LoRA adapter as `cfg` says and write it to `run_dir/adapter/`. None if the user declined."""
    tr = cfg.trainer
    accelerator = build_accelerator(tr, run_dir)
    set_seed(tr.seed)

    # Data: every file is checked against the model's sample layout before any weight is loaded.
    shape = sample_shape(cfg.model)
    dataset_dir = synthetic_dataset(cfg.data.synthetic, shape) if cfg.data.synthetic else Path(cfg.data.dataset_dir)
    dataset = LatentDataset(dataset_dir, shape)
    sampler = EpochSampler(len(dataset), tr.seed)
    workers = 0 if sys.platform == "win32" else cfg.data.num_workers  # worker processes re-import torch there: slow
    loader = DataLoader(
        dataset, batch_size=tr.batch_size, sampler=sampler, num_workers=workers,
        collate_fn=CropCollate(tr.seed, _crop_frames(cfg.data.crop_seconds), cfg.model.arch.patch_size),
        pin_memory=cfg.data.pin_memory and accelerator.device.type == "cuda",
        persistent_workers=cfg.data.persistent_workers and workers > 0,
        prefetch_factor=cfg.data.prefetch_factor if workers > 0 else None,
    )
    steps_per_epoch = math.ceil(math.ceil(len(loader) / accelerator.num_processes) / tr.gradient_accumulation)
    total_steps = tr.epochs * steps_per_epoch if tr.max_steps is None else min(tr.max_steps, tr.epochs * steps_per_epoch)
    epochs = math.ceil(total_steps / steps_per_epoch)

    plan = _plan(cfg, run_dir, accelerator, dataset, steps_per_epoch, epochs, total_steps)
    if accelerator.is_main_process:
        show(plan)
        if not confirm(cfg.ui.yes):
            log.info("not started")
            return None

    # Model: frozen DiT in the compute dtype, fp32 LoRA on the chosen projections.
    dit = build_dit(cfg.model, weight_dtype(accelerator.mixed_precision))
    transformer = dit.transformer
    add_lora(transformer, cfg.lora, cfg.attention, tr.seed)
    if tr.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    params = [p for p in transformer.parameters() if p.requires_grad]

    optimizer = instantiate(cfg.optimizer)(params)
    scheduler = LambdaLR(optimizer, instantiate(cfg.scheduler)(total_steps=total_steps))  # stepped once per update
    transformer, optimizer, loader = accelerator.prepare(transformer, optimizer, loader)
    null_emb = dit.null_condition_emb.to(accelerator.device)
    gens = StepGenerators.from_seed(tr.seed)
    settings = StepSettings.from_config(cfg.training, cfg.model)
    max_grad_norm, log_every = tr.max_grad_norm, tr.log_every
    logger = TrainingLogger(accelerator, cfg, tr.log_every, tr.log_heavy_every)

    transformer.train()
    step, smoothed, first, shown_loss, window = 0, None, None, float("nan"), []
    result = FitResult(final_loss=float("nan"), first_loss=float("nan"), steps=0)
    clock = time.perf_counter()
    with TrainingProgress(total_steps, epochs, is_plain(cfg.ui.plain), log_every,
                          accelerator.is_main_process) as progress:
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            for batch in loader:
                with accelerator.accumulate(transformer):
                    loss, timesteps = flow_matching_loss(transformer, batch, null_emb, settings, gens)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        logger.layer_gradients(step + 1, transformer)
                        grad_norm = accelerator.clip_grad_norm_(params, max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                window.append(loss.detach())
                logger.add_timesteps(timesteps)
                if not accelerator.sync_gradients:
                    continue

                # One optimizer step is complete. Losses stay on the device until they are logged.
                step_loss = torch.stack(window).mean()
                window.clear()
                first = step_loss if first is None else first
                smoothed = step_loss if smoothed is None else LOSS_SMOOTHING * smoothed + (1 - LOSS_SMOOTHING) * step_loss
                lr = scheduler.get_last_lr()[0]
                scheduler.step()
                step += 1
                now = time.perf_counter()
                result.step_seconds.append(now - clock)
                clock = now
                if step % log_every == 0 or step == total_steps:
                    shown_loss = logger.scalars(step, smoothed, step_loss, grad_norm, lr)
                progress.update(step, epoch, shown_loss, lr)
                if step >= total_steps:
                    break

    accelerator.wait_for_everyone()
    result.steps, result.first_loss, result.final_loss = step, float(first), float(smoothed)
    if accelerator.is_main_process:
        result.adapter_dir = run_dir / "adapter"
        save_adapter(accelerator.unwrap_model(transformer), result.adapter_dir)
        log.info("adapter written to %s (smoothed loss %.4f, first %.4f)", result.adapter_dir, result.final_loss,
                 result.first_loss)
    logger.close()
    accelerator.end_training()
    return result


def _crop_frames(crop_seconds: Optional[float]) -> Optional[int]:
    return None if crop_seconds is None else int(crop_seconds * LATENT_FPS)


def _plan(cfg: DictConfig, run_dir: Path, accelerator, dataset: LatentDataset, steps_per_epoch: int, epochs: int,
          total_steps: int) -> RunPlan:
    lora, tr = cfg.lora, cfg.trainer
    modules = "+".join(lora.target_modules)
    return RunPlan(
        run_dir=str(run_dir),
        model=f"{cfg.model.variant} ({cfg.model.arch.num_hidden_layers} layers, hidden {cfg.model.arch.hidden_size})",
        device=str(accelerator.device),
        precision="fp32" if accelerator.mixed_precision == "no" else accelerator.mixed_precision,
        samples=len(dataset),
        audio_seconds=dataset.seconds,
        batch_size=tr.batch_size,
        gradient_accumulation=tr.gradient_accumulation,
        processes=accelerator.num_processes,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        total_steps=total_steps,
        lora=f"rank {lora.rank}, alpha {lora.alpha:g}, dropout {lora.dropout:g}, {modules} on {'+'.join(cfg.attention.blocks)}",
        trainable_params=lora_parameter_count(cfg.model.arch, lora, cfg.attention),
        optimizer=f"{cfg.optimizer._target_} lr {cfg.optimizer.lr:g}, weight decay {cfg.optimizer.weight_decay:g}",
        scheduler=f"{cfg.scheduler._target_.rsplit('.', 1)[-1]}, warmup {cfg.scheduler.warmup_steps} steps",
        training=f"{cfg.training.mode}, CFG dropout {cfg.training.cfg_ratio:g}",
    )
