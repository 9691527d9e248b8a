"""The setup shown before training starts, so a wrong path or preset is caught before hours of GPU time."""

from dataclasses import dataclass

from rich.prompt import Confirm
from rich.table import Table

from sidestep.ui.console import console, is_interactive


@dataclass
class RunPlan:
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
    lora: str
    trainable_params: int
    optimizer: str
    scheduler: str
    training: str
    checkpoints: str
    kernels: str
    sampling: str
    memory: str = ""  # the predicted peak (training/memory.py)

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.gradient_accumulation * self.processes


def show(plan: RunPlan) -> None:
    table = Table(title="Side-Step run", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("run dir", plan.run_dir),
        ("model", plan.model),
        ("device / precision", f"{plan.device} / {plan.precision}"),
        ("data", f"{plan.samples} samples, {plan.audio_seconds / 60:.1f} min of audio"
                 + (f", {plan.held_out} held out for the validation loss" if plan.held_out else "")),
        ("batch", f"{plan.batch_size} x {plan.gradient_accumulation} accumulation x {plan.processes} process(es)"
                  f" = {plan.effective_batch}"),
        ("steps", f"{plan.total_steps} optimizer steps ({plan.steps_per_epoch}/epoch, {plan.epochs} epochs)"),
        ("LoRA", f"{plan.lora}, {plan.trainable_params:,} trainable parameters"),
        ("optimizer", plan.optimizer),
        ("schedule", plan.scheduler),
        ("timesteps", plan.training),
        ("kernels", plan.kernels),
        ("checkpoints", plan.checkpoints),
        ("samples", plan.sampling),
        ("memory", plan.memory),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def confirm(skip: bool) -> bool:
    """Ask to start unless `ui.yes` is set or nobody is at the terminal."""
    if skip or not is_interactive():
        return True
    return Confirm.ask("Start training?", default=True, console=console)
