"""Held-out loss at fixed timesteps and fixed noise, so runs of a sweep can be compared on the same footing."""

from typing import Optional

import torch
from accelerate.utils import send_to_device
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from sidestep.data.dataset import LatentDataset
from sidestep.data.loader import make_loader
from sidestep.training.flow_matching import velocity_losses

TIMESTEPS = (0.1, 0.3, 0.5, 0.7, 0.9)


class HeldOutLoss:
    """Every evaluation sees the same crops, timesteps and noise; it touches no RNG that training uses."""

    def __init__(self, cfg: DictConfig, dataset: Optional[LatentDataset], device: torch.device):
        self.loader: Optional[DataLoader] = None
        if dataset is not None:
            self.loader, sampler = make_loader(cfg, dataset, device.type)
            sampler.shuffle = False
        self.seed, self.device = cfg.trainer.seed, device
        self.noise: Optional[float] = None  # standard error of the last loss over the held-out songs

    @property
    def enabled(self) -> bool:
        return self.loader is not None

    @torch.no_grad()
    def __call__(self, transformer: torch.nn.Module) -> float:
        gen = torch.Generator().manual_seed(self.seed)
        was_training = transformer.training
        transformer.eval()
        per_song = []  # each held-out song's loss, averaged over the timesteps
        for batch in self.loader:
            batch = send_to_device(batch, self.device)
            x0 = batch["target_latents"]
            losses = []
            for t in TIMESTEPS:
                noise = torch.randn(x0.shape, generator=gen).to(x0)
                timesteps = torch.full((x0.shape[0],), t, device=x0.device, dtype=x0.dtype)
                losses.append(velocity_losses(transformer, batch, timesteps, noise, batch["encoder_hidden_states"]))
            per_song.append(torch.stack(losses).double().mean(dim=0).cpu())
        transformer.train(was_training)
        songs = torch.cat(per_song)
        # how much the loss would move with other songs held out: runs closer than this are not told apart
        self.noise = float(songs.std() / len(songs) ** 0.5) if len(songs) > 1 else None
        return float(songs.mean())
