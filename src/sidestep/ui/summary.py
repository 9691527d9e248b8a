"""The setup shown before training starts, so a wrong path or preset is caught before hours of GPU time."""

from rich.prompt import Confirm
from rich.table import Table

from sidestep.sizes import binary_size
from sidestep.training.plan import RunPlan
from sidestep.ui.console import SKIP_HINT, console, is_interactive, to_log_file


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
        ("adapter", f"{plan.adapter}, {plan.trainable_params:,} trainable parameters, "
                    f"{binary_size(plan.file_bytes)} as a PEFT adapter file"),
        ("optimizer", plan.optimizer),
        ("schedule", plan.scheduler),
        ("timesteps", plan.timesteps),
        ("kernels", plan.kernels),
        ("checkpoints", plan.checkpoints),
        ("samples", plan.sampling),
        ("step adapters", plan.step_adapters),
        ("memory", plan.memory),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    to_log_file("\n".join([table.title] + [f"  {key}: {value}" for key, value in rows]))


def confirm(skip: bool) -> bool:
    """Ask to start unless `ui.yes` is set, it was asked already (a sweep, the wizard) or nobody is at the terminal."""
    if skip or not is_interactive():
        return True
    return Confirm.ask(f"Start training? {SKIP_HINT}", default=True, console=console)
