"""The numbers of a run, worked out before any weight is loaded, for the summary the user confirms."""

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from accelerate import Accelerator
from omegaconf import DictConfig

from sidestep.adapters.attach import adapter_config, adapter_type, trainable_parameters
from sidestep.adapters.files import DTYPES
from sidestep.adapters.label import adapter_words
from sidestep.adapters.rank_map import read_rank_map
from sidestep.config import as_container
from sidestep.config.parts import SchedulerConfig
from sidestep.config.schema import option_name
from sidestep.data.dataset import LatentDataset
from sidestep.training.accelerator import weight_dtype
from sidestep.training.live_samples import resolve_duration, sampled_steps, sampling_summary
from sidestep.training.memory import MemoryPlan, crop_frames, fits_card, predict
from sidestep.training.step_adapters import adapter_copies, disk_cost

log = logging.getLogger(__name__)


@dataclass
class RunPlan:
    """The summary's values: what the user checks before hours of GPU time."""

    run_dir: str
    model: str
    device: str
    precision: str
    samples: int
    held_out: int
    audio_seconds: float
    batch_size: int
    gradient_accumulation: int
    processes: int
    steps_per_epoch: int
    epochs: int
    total_steps: int
    adapter: str
    trainable_params: int
    file_bytes: int  # of one exported adapter file (Side-Step's own copy) at export.dtype
    optimizer: str
    scheduler: str
    timesteps: str
    checkpoints: str
    kernels: str
    sampling: str
    memory: str = ""  # the predicted peak (training/memory.py)
    step_adapters: str = ""  # what the adapter kept at each sampled step takes on disk

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.gradient_accumulation * self.processes


def schedule_lengths(cfg: DictConfig, batches: int, processes: int):
    """(optimizer steps per epoch, total optimizer steps, epochs to run) for `batches` batches per epoch."""
    tr = cfg.trainer
    steps_per_epoch = math.ceil(math.ceil(batches / processes) / tr.gradient_accumulation)
    total = tr.epochs * steps_per_epoch if tr.max_steps is None else min(tr.max_steps, tr.epochs * steps_per_epoch)
    return steps_per_epoch, total, math.ceil(total / steps_per_epoch)


def run_plan(cfg: DictConfig, run_dir: Path, accelerator: Accelerator, dataset: LatentDataset,
             held_out: Optional[LatentDataset], steps_per_epoch: int, epochs: int, total_steps: int, resume: str,
             attention: str) -> RunPlan:
    """The summary's numbers. It also settles what the config leaves to the data: `sample.duration`."""
    adapter, tr = cfg.adapter, cfg.trainer
    warmup = cfg.scheduler.warmup_steps
    if warmup >= total_steps > 0:
        log.warning("scheduler.warmup_steps=%d covers the whole run of %d optimizer steps: the learning rate never "
                    "reaches optimizer.lr; lower scheduler.warmup_steps (about a tenth of the run)", warmup, total_steps)
    resolve_duration(cfg, dataset.frames)
    modules = "+".join(adapter.target_modules)
    params = trainable_parameters(cfg)
    return RunPlan(
        run_dir=str(run_dir),
        model=f"{cfg.model.variant} ({cfg.model.arch.num_hidden_layers} layers, hidden {cfg.model.arch.hidden_size})",
        device=str(accelerator.device),
        precision="fp32" if accelerator.mixed_precision == "no" else accelerator.mixed_precision,
        samples=len(dataset),
        held_out=0 if held_out is None else len(held_out),
        audio_seconds=dataset.seconds,
        batch_size=tr.batch_size,
        gradient_accumulation=tr.gradient_accumulation,
        processes=accelerator.num_processes,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        total_steps=total_steps,
        adapter=(adapter_summary(cfg) + ", " + (read_rank_map(adapter.rank_map, cfg.model.arch).describe()
                                                 if adapter.get("rank_map") else
                                                 f"{modules} on {'+'.join(cfg.attention.blocks)}")),
        trainable_params=params,
        file_bytes=params * DTYPES[cfg.export.dtype].itemsize,
        optimizer=f"{cfg.optimizer._target_} lr {cfg.optimizer.lr:g}, weight decay {cfg.optimizer.weight_decay:g}",
        scheduler=schedule_summary(cfg.scheduler),
        timesteps=f"{cfg.timesteps.mode}, CFG dropout {cfg.timesteps.cfg_ratio:g}",
        checkpoints=(f"every {tr.save_every} epochs" + (f" and {tr.save_every_steps} steps" if tr.save_every_steps else "")
                     + f", keeping {tr.keep_checkpoints}; {resume}"),
        kernels=f"attention {attention}, torch.compile {'off' if tr.compile == 'false' else tr.compile}",
        sampling=sampling_summary(cfg, dataset.frames, steps_per_epoch, total_steps,
                                  tr.batch_size * tr.gradient_accumulation * accelerator.num_processes),
        memory=_memory(predict(cfg, weight_dtype(accelerator.mixed_precision), crop_frames(cfg, max(dataset.frames)),
                               trainable=params)),
        step_adapters=disk_cost(len(sampled_steps(cfg, steps_per_epoch, total_steps)),
                                params * DTYPES[cfg.export.dtype].itemsize, adapter_copies(adapter_type(cfg))),
    )


def schedule_summary(scheduler: DictConfig) -> str:
    """`cosine_with_restarts cycles 3, eta_min 0.1, warmup 100 steps from 10%`: the option, its own knobs, warm-up."""
    own = "".join(f" {k} {v:g}," for k, v in scheduler.items() if k not in SchedulerConfig.__dataclass_fields__)
    return (f"{option_name('scheduler', scheduler)}{own or ','} warmup {scheduler.warmup_steps} "
            f"steps from {scheduler.warmup_start_factor:.0%}")


def _memory(plan: MemoryPlan) -> str:
    return f"{plan.describe()}; {fits_card(plan.peak)}"


def adapter_summary(cfg: DictConfig) -> str:
    """The type and the settings its files state (`AdapterType.describe`): rank and alpha, or OFT's block size."""
    described = adapter_type(cfg).describe(adapter_config(cfg))
    settings = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in described.items() if k != "use_dora")
    return f"{adapter_words(as_container(cfg)).split(' ')[0]} {settings}"
