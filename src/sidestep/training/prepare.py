"""Everything about a run that is settled before any weight is loaded: devices, the claimed run dir, the data, the
checkpoint to resume from and the plan the user confirms. `sidestep.train` shows the plan, asks, then calls `fit`.
"""

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from sidestep.data.loader import make_loader, open_dataset
from sidestep.training import checkpoint as ckpt
from sidestep.training.accelerator import build_accelerator, weight_dtype
from sidestep.training.adapter_facts import run_facts
from sidestep.training.fast_paths import attention_backend, check_compile_backend
from sidestep.training.fingerprint import fingerprint as run_fingerprint
from sidestep.training.fingerprint import mismatches
from sidestep.training.job_state import active_attention, fresh_process_state
from sidestep.training.plan import RunPlan, run_plan, schedule_lengths
from sidestep.training.run_dir import claimed
from sidestep.training.validation import HeldOutLoss

log = logging.getLogger(__name__)


@dataclass
class PreparedRun:
    cfg: DictConfig
    run_dir: Path  # the main process's, on every process
    accelerator: Accelerator
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
def prepared_run(cfg: DictConfig, run_dir: Path, make_dataset: Optional[Callable[[], object]] = None
                 ) -> Iterator[PreparedRun]:
    """Build the accelerator and hold the run dir while the block runs. `make_dataset` (the caller's preprocessing
    of songs) runs on the main process first, then on the others, before each opens the dataset."""
    with fresh_process_state():  # a sweep's earlier job left nothing behind
        accelerator = build_accelerator(cfg.trainer, run_dir)
        run_dir = Path(broadcast_object_list([str(run_dir)])[0])  # several processes: the main one's run dir for all
        with claimed(run_dir, cfg.resume_from, accelerator.is_main_process):
            run = _prepare(cfg, run_dir, accelerator, make_dataset)
            with active_attention(run.attention):
                yield run


def _prepare(cfg: DictConfig, run_dir: Path, accelerator: Accelerator,
             make_dataset: Optional[Callable[[], object]]) -> PreparedRun:
    tr = cfg.trainer
    set_seed(tr.seed)
    dtype = weight_dtype(accelerator.mixed_precision)
    attention = attention_backend(tr.attention_backend, accelerator.device, dtype)  # refused before any data is made
    check_compile_backend(tr.compile, tr.compile_backend)

    with accelerator.main_process_first():  # the main process makes the data (songs or synthetic) alone
        if make_dataset is not None:
            make_dataset()
        dataset = open_dataset(cfg)
    train_set, held_out_set = dataset.split(cfg.data.val_fraction, tr.seed)
    loader, _ = make_loader(cfg, train_set, accelerator.device.type)
    held_out = HeldOutLoss(cfg, held_out_set, accelerator.device)
    steps_per_epoch, total_steps, epochs = schedule_lengths(cfg, len(loader), accelerator.num_processes)

    # Resume: refuse a checkpoint of a different setup before anything heavy happens.
    fingerprint = run_fingerprint(cfg, dataset.files)
    resume_dir = ckpt.resolve(cfg.resume_from, run_dir) if cfg.resume_from else None
    exact_resume = resume_dir is not None and _fits(resume_dir, fingerprint, cfg.resume.strict)

    plan = run_plan(cfg, run_dir, accelerator, train_set, held_out_set, steps_per_epoch, epochs, total_steps,
                    f"resuming {resume_dir}" if resume_dir else "fresh start", attention)
    return PreparedRun(cfg, run_dir, accelerator, loader, held_out, total_steps, epochs, fingerprint, resume_dir,
                       exact_resume, dtype, attention, plan, run_facts(cfg, plan, fingerprint))


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
