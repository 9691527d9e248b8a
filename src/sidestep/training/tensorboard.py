"""What goes to TensorBoard (`<run>/tb/`), written by the main process only.

Every `log_every` optimizer steps: smoothed and raw loss, learning rate (Prodigy: d x lr), gradient norm and a histogram of the
timesteps drawn since the last write. Every `log_heavy_every` steps: the LoRA gradient norm of each layer.
"""

import re
from typing import Dict, List, Optional

import torch
from accelerate import Accelerator
from omegaconf import DictConfig
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from sidestep.config import as_container, flatten

TRACKER_NAME = "tb"
LAYER_INDEX = re.compile(r"layers\.(\d+)\.")


def applied_lr(optimizer) -> float:
    """The step size the last update used, as logged and shown: the scheduled lr, times Prodigy's own estimate `d`
    (its lr is only a multiplier of d, so showing it alone says nothing)."""
    group = optimizer.param_groups[0]
    return group["lr"] * group.get("d", 1.0)


def layer_grad_norms(transformer: torch.nn.Module) -> Dict[int, float]:
    """L2 norm of the adapter gradients of each transformer layer."""
    squares: Dict[int, torch.Tensor] = {}
    for name, param in transformer.named_parameters():
        if param.grad is None:
            continue
        match = LAYER_INDEX.search(name)
        if match:
            layer = int(match.group(1))
            squares[layer] = squares.get(layer, 0.0) + param.grad.detach().float().pow(2).sum()
    return {layer: float(total.sqrt()) for layer, total in sorted(squares.items())}


def flat_hparams(cfg: DictConfig) -> dict:
    """TensorBoard's hparams take flat scalars: `lora/rank`, `optimizer/lr`, ... (lists as text, None left out)."""
    leaves = flatten(as_container(cfg), sep="/")
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in leaves.items() if v is not None}


def write_hparams(writer: SummaryWriter, values: dict) -> None:
    """Into the run's own event file: `add_hparams` (what Accelerate calls) writes a second run in a sub-folder, so
    TensorBoard would list every run twice."""
    for summary in hparams(values, {}):
        writer.file_writer.add_summary(summary)


class TrainingLogger:
    def __init__(self, accelerator: Accelerator, cfg: DictConfig, log_every: int, log_heavy_every: int):
        self.accelerator, self.log_every, self.log_heavy_every = accelerator, log_every, log_heavy_every
        self.main = accelerator.is_main_process
        self.timestep_buffer: List[torch.Tensor] = []
        accelerator.init_trackers(TRACKER_NAME)
        self.writer = accelerator.get_tracker("tensorboard", unwrap=True) if self.main else None
        if self.writer is not None:
            write_hparams(self.writer, flat_hparams(cfg))

    def add_timesteps(self, timesteps: torch.Tensor) -> None:
        self.timestep_buffer.append(timesteps)

    def layer_gradients(self, step: int, transformer: torch.nn.Module) -> None:
        """Call after backward, before clipping, on steps that complete an update."""
        if self.main and step % self.log_heavy_every == 0:
            for layer, norm in layer_grad_norms(transformer).items():
                self.writer.add_scalar(f"grad_norm/layer_{layer:02d}", norm, step)

    def scalars(self, step: int, smoothed: torch.Tensor, loss: torch.Tensor, grad_norm: Optional[torch.Tensor],
                lr: float) -> float:
        """Log the step's numbers (one device sync) and return the smoothed loss for the progress display."""
        smoothed_value = float(self.accelerator.reduce(smoothed.detach(), "mean"))
        values = {"loss/smoothed": smoothed_value, "loss/step": float(self.accelerator.reduce(loss.detach(), "mean")),
                  "lr": lr}
        if grad_norm is not None:
            values["grad_norm/total"] = float(grad_norm)
        self.accelerator.log(values, step=step)
        if self.main and self.timestep_buffer:
            self.writer.add_histogram("timesteps", torch.cat(self.timestep_buffer), step)
        self.timestep_buffer.clear()
        return smoothed_value

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
