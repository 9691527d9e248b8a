"""The fast paths of a training step: which attention kernel runs, and which parts torch.compile builds.

`trainer.attention_backend` goes through diffusers' attention dispatch (`set_attention_backend`). `auto` takes
the fastest kernel that is installed, has a backward pass and suits the device and dtype: FlashAttention 3 on
Hopper, FlashAttention 2 on other CUDA cards in bf16/fp16, else PyTorch's own scaled-dot-product attention
(`native`, which itself picks flash / memory-efficient / math kernels). Hub-downloaded kernels are not offered:
a run never fetches code. SageAttention is forward-only, so it cannot train.

`trainer.compile=blocks` compiles each transformer block once (regional compilation: the 24 blocks share one
compiled graph, so compile time stays that of one block); `full` compiles the whole DiT.
"""

import logging
from typing import Dict

import torch
from diffusers.models import attention_dispatch as dispatch

from sidestep.errors import ConfigError

log = logging.getLogger(__name__)


CPU_BACKENDS = ("native", "_native_math")  # the others are CUDA kernels (flex compiles to Triton, a GPU language)


def installed_backends() -> Dict[str, bool]:
    """Which optional attention kernels diffusers found usable in this environment."""
    return {"flash": dispatch._CAN_USE_FLASH_ATTN, "_flash_3": dispatch._CAN_USE_FLASH_ATTN_3,
            "flex": dispatch._CAN_USE_FLEX_ATTN, "xformers": dispatch._CAN_USE_XFORMERS_ATTN}


def attention_backend(requested: str, device: torch.device, dtype: torch.dtype) -> str:
    """The backend a run uses for `trainer.attention_backend=requested`."""
    installed = installed_backends()
    if requested == "auto":
        half = dtype in (torch.bfloat16, torch.float16)
        if device.type == "cuda" and half and installed["_flash_3"] and torch.cuda.get_device_capability(device)[0] == 9:
            return "_flash_3"
        if device.type == "cuda" and half and installed["flash"]:
            return "flash"
        return "native"
    if device.type != "cuda" and requested not in CPU_BACKENDS:
        raise ConfigError(f"trainer.attention_backend={requested}: runs on CUDA GPUs only; on this {device.type} "
                          f"device use auto, {' or '.join(CPU_BACKENDS)}")
    if installed.get(requested) is False:  # checks.py has already refused names that cannot train
        raise ConfigError(f"trainer.attention_backend={requested}: its package is not installed; install it or use auto")
    return requested


def check_compile_backend(mode: str, backend: str) -> None:
    """`trainer.compile_backend` must be one torch.compile knows (looked up only when compiling: it imports dynamo)."""
    if mode == "false":
        return
    known = torch._dynamo.list_backends(exclude_tags=())
    if backend not in known:
        raise ConfigError(f"trainer.compile_backend: {backend!r} is not a torch.compile backend; use inductor, or "
                          f"aot_eager to capture without generating code (known: {', '.join(known)})")


def use_attention_backend(transformer: torch.nn.Module, backend: str) -> None:
    if backend != "native":  # native is diffusers' default: nothing to switch
        transformer.set_attention_backend(backend)


def compile_transformer(transformer: torch.nn.Module, mode: str, backend: str) -> None:
    """`blocks`: each transformer block (PEFT's LoRA layers and checkpointing inside it); `full`: the whole DiT."""
    if mode == "blocks":
        for block in transformer.layers:
            block.compile(backend=backend)
    elif mode == "full":
        transformer.compile(backend=backend)
