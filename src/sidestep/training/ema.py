"""An exponential moving average of the adapter weights (`trainer.ema.*`), kept beside the training weights.

After every applied optimizer update n (counted from 0), each EMA tensor becomes
    ema <- d_n * ema + (1 - d_n) * w,   d_n = min(decay, (1 + n) / (10 + n))
starting from the adapter's weights before the first update. The warm-up (diffusers' EMAModel rule) lets the
average follow the weights early instead of staying near the untrained adapter for about 1 / (1 - decay) steps; no
bias correction is needed then, as the average starts from real weights, not from zero. A skipped non-finite step
is no update.

When on, samples, the held-out loss and the exported adapter use these weights (swapped in and out bit-exactly);
every checkpoint holds them beside the raw ones (`ema_model.safetensors`, same names), so a resume goes on exactly.
"""

import contextlib
import json
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import torch
from accelerate import Accelerator
from omegaconf import DictConfig
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors import safe_open

from sidestep.adapters.files import FORMATS_FILE
from sidestep.atomic import atomic_file, save_safetensors
from sidestep.training.checkpoint_check import CheckpointError, read_tensors

EMA_FILE = "ema_model.safetensors"
WARMUP = (1.0, 10.0)  # d_n = (WARMUP[0] + n) / (WARMUP[1] + n) until it reaches the decay


def decay_at(decay: float, updates: int) -> float:
    """The decay of update number `updates` (0 for the first)."""
    return min(decay, (WARMUP[0] + updates) / (WARMUP[1] + updates))


def describe(cfg: DictConfig) -> Optional[str]:
    """The weights a run's samples, held-out loss and adapter are, in words; None when EMA is off."""
    ema = cfg.trainer.ema
    return None if ema.decay is None else f"EMA of the adapter weights (decay {ema.decay:g}, kept on {ema.device})"


class AdapterEma:
    """The EMA of a model's trainable tensors; with `decay` None every method does nothing."""

    def __init__(self, model: torch.nn.Module, decay: Optional[float], device: str):
        self.model, self.decay, self.updates = model, decay, 0
        self.params: List[torch.nn.Parameter] = [p for p in model.parameters() if p.requires_grad]
        place = (lambda p: p.device) if device == "same" else (lambda p: torch.device("cpu"))
        self.shadow = [p.detach().to(place(p), copy=True) for p in self.params] if self.enabled else []

    @property
    def enabled(self) -> bool:
        return self.decay is not None

    @torch.no_grad()
    def update(self) -> None:
        """After an applied optimizer update."""
        if not self.enabled:
            return
        weight = 1.0 - decay_at(self.decay, self.updates)
        torch._foreach_lerp_(self.shadow, [p.detach().to(s.device) for p, s in zip(self.params, self.shadow)], weight)
        self.updates += 1

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The model carries the EMA weights inside the block, its own ones again (bit-exact) after it."""
        if not self.enabled:
            yield
            return
        with torch.no_grad():
            raw = [p.detach().clone() for p in self.params]
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, r in zip(self.params, raw):
                    p.copy_(r)

    def state(self) -> Dict[str, torch.Tensor]:
        """The EMA under the adapter file's names (what `sidestep.sample` and `export` read from a checkpoint)."""
        with self.swapped_in():
            return {k: v.detach().to("cpu", copy=True).contiguous()  # a copy: on the CPU `.cpu()` is the parameter
                    for k, v in get_peft_model_state_dict(self.model).items()}

    def load(self, checkpoint: Path) -> None:
        """Take the EMA and its update count from a checkpoint written with the same decay."""
        if not self.enabled:
            return
        path = Path(checkpoint) / EMA_FILE
        if not path.is_file():
            raise CheckpointError(f"{checkpoint}: holds no {EMA_FILE} for trainer.ema.decay={self.decay}; resume "
                                  "with the decay it was trained with, or resume.strict=false")
        saved, current = read_tensors(path), get_peft_model_state_dict(self.model)
        if saved.keys() != current.keys() or any(saved[k].shape != current[k].shape for k in current):
            raise CheckpointError(f"{path}: its tensors do not fit this run's adapter; resume from another checkpoint")
        with safe_open(str(path), framework="pt") as f:
            self.updates = int((f.metadata() or {}).get("ema_updates", 0))
        with torch.no_grad():
            raw = [p.detach().clone() for p in self.params]
            set_peft_model_state_dict(self.model, saved)
            for s, p, r in zip(self.shadow, self.params, raw):
                s.copy_(p)
                p.copy_(r)

    def register_hooks(self, accelerator: Accelerator) -> None:
        """Every checkpoint Accelerate writes holds the EMA (its digest in trainer_state.json); `load` takes it back."""
        if not self.enabled:
            return

        def save_hook(models, weights, output_dir):
            if accelerator.is_main_process:
                save_safetensors(self.state(), Path(output_dir) / EMA_FILE,
                                 {"format": "pt", "ema_decay": f"{self.decay:g}", "ema_updates": str(self.updates)})

        accelerator.register_save_state_pre_hook(save_hook)


def mark_formats(cfg: DictConfig, adapter_dir: Path) -> None:
    """With EMA on, each entry of the adapter's `formats.json` says its tensors are the EMA's."""
    words = describe(cfg)
    path = Path(adapter_dir) / FORMATS_FILE
    if words is None or not path.is_file():
        return
    entries = json.loads(path.read_text())
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({k: {**v, "weights": words} for k, v in entries.items()}, indent=2) + "\n")
