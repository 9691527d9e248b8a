"""Which device a tool runs on and in what precision: shared by training (through its `Accelerator`) and by the
tools that run models outside training (preprocess, sample)."""

import torch

from sidestep.errors import ConfigError


def device_kind(name: str, key: str = "trainer.device") -> str:
    """`auto` picks CUDA, then MPS, then XPU, then the CPU; an explicit device must exist."""
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
        "xpu": hasattr(torch, "xpu") and torch.xpu.is_available(),
        "cpu": True,
    }
    if name == "auto":
        return next(kind for kind, ok in available.items() if ok)
    kind = name.partition(":")[0]
    if not available[kind]:
        raise ConfigError(f"{key}={name}: no such {kind.upper()} device is visible; use {key}=auto or cpu")
    return kind


def pick_device(name: str, key: str) -> torch.device:
    """For the tools that run models outside training (preprocess, sample): `cuda:1` stays `cuda:1`."""
    kind = device_kind(name, key)
    return torch.device(name if ":" in name else kind)


def compute_dtype(precision: str, device: str) -> torch.dtype:
    """Inference precision: `auto` is bf16 where the accelerator has it (CUDA, XPU), fp32 on the CPU and MPS."""
    if precision == "auto":
        precision = "bf16" if device in ("cuda", "xpu") else "fp32"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
