"""Training's precision choice, and the `Accelerator` that owns device and precision (plus accumulation and
TensorBoard); the device itself is picked in `sidestep.devices`."""

import os
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration
from omegaconf import DictConfig

from sidestep.devices import device_kind
from sidestep.errors import ConfigError


def pick_precision(precision: str, device: str) -> str:
    """Accelerate's `mixed_precision`: `auto` is bf16 on CUDA/XPU (fp16 where bf16 is missing), fp16 on MPS, fp32 on CPU."""
    if precision == "auto":
        if device == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = {"xpu": "bf16", "mps": "fp16"}.get(device, "fp32")
    if precision == "fp16" and device == "cpu":
        raise ConfigError("trainer.precision=fp16 is not supported on the CPU; use fp32 or bf16")
    return "no" if precision == "fp32" else precision


def weight_dtype(mixed_precision: str) -> torch.dtype:
    """The frozen base weights are stored in the compute dtype; LoRA weights stay fp32."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision, torch.float32)


def build_accelerator(trainer: DictConfig, run_dir: Path) -> Accelerator:
    if trainer.device.startswith("cuda:") and "LOCAL_RANK" not in os.environ:
        # Must happen before anything asks CUDA for its devices; one visible card is then `cuda`.
        os.environ["CUDA_VISIBLE_DEVICES"] = trainer.device.split(":")[1]
    device = device_kind(trainer.device)
    return Accelerator(
        cpu=device == "cpu",
        # pinned batches are copied to a GPU without making the host wait for the copy
        dataloader_config=DataLoaderConfiguration(non_blocking=device == "cuda"),
        mixed_precision=pick_precision(trainer.precision, device),
        gradient_accumulation_steps=trainer.gradient_accumulation,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir)),
    )
