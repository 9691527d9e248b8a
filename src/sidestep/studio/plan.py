"""The setup summary shown before starting: the run's numbers from the resolved config and its data (steps,
predicted memory, adapter size), worked out with the training library's own functions, without loading a weight."""

from typing import List, Tuple

from omegaconf import DictConfig

from sidestep.adapters.attach import trainable_parameters
from sidestep.data.loader import make_loader, open_dataset
from sidestep.devices import resolve_device
from sidestep.training.accelerator import resolve_precision, weight_dtype
from sidestep.training.live_samples import resolve_duration
from sidestep.training.memory import crop_frames, fits_card, predict
from sidestep.training.plan import adapter_summary, schedule_lengths


def summary(cfg: DictConfig, folder: str) -> List[Tuple[str, str]]:
    """(label, value) rows like the terminal's setup summary; a run that preprocesses songs first counts its
    steps once they are tensors."""
    tr = cfg.trainer
    device = resolve_device(tr.device)
    dtype = weight_dtype(resolve_precision(tr.precision, device))
    params = trainable_parameters(cfg)
    rows = [("run dir", folder),
            ("model", f"{cfg.model.variant} ({cfg.model.arch.num_hidden_layers} layers, "
                      f"hidden {cfg.model.arch.hidden_size})"),
            ("device / precision", f"{device} / {str(dtype).removeprefix('torch.')}"),
            ("adapter", f"{adapter_summary(cfg)}, {params:,} trainable parameters"),
            ("optimizer", f"{cfg.optimizer._target_} lr {cfg.optimizer.lr:g}"),
            ("batch", f"{tr.batch_size} x {tr.gradient_accumulation} accumulation")]
    if cfg.preprocess.audio_dir is not None:
        return rows + [("steps", f"{tr.epochs} epochs (steps counted once {cfg.preprocess.audio_dir} is "
                                 "preprocessed)")]
    train_set, _ = open_dataset(cfg).split(cfg.data.val_fraction, tr.seed)
    loader, _ = make_loader(cfg, train_set, device)
    per_epoch, total, epochs = schedule_lengths(cfg, len(loader), 1)
    resolve_duration(cfg, train_set.frames)  # as the terminal's plan does: samples as long as the songs
    memory = predict(cfg, dtype, crop_frames(cfg, max(train_set.frames)), trainable=params)
    return rows + [("data", f"{len(train_set)} samples, {train_set.seconds / 60:.1f} min of audio"),
                   ("steps", f"{total} optimizer steps ({per_epoch}/epoch, {epochs} epochs)"),
                   ("memory", f"{memory.describe()}; {fits_card(memory.peak)}")]
