"""One flow-matching training step for the ACE-Step DiT, as ACE-Step 1.5 was trained.

With clean latents x0 and noise x1: x_t = t*x1 + (1-t)*x0, the target velocity is x1 - x0, and the loss is
the MSE over valid (unpadded) frames. Timesteps, noise and condition dropout each draw from their own
generator, so the run's random stream does not depend on anything else that uses randomness.
"""

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from omegaconf import DictConfig


@dataclass
class StepGenerators:
    timesteps: torch.Generator
    noise: torch.Generator
    condition_dropout: torch.Generator

    @classmethod
    def from_seed(cls, seed: int, process_index: int = 0) -> "StepGenerators":
        """Independent streams per purpose, and per process so replicas do not draw the same noise."""
        root = np.random.SeedSequence(seed) if process_index == 0 else np.random.SeedSequence([seed, process_index])
        seeds = [int(s.generate_state(1)[0]) for s in root.spawn(3)]
        return cls(*(torch.Generator().manual_seed(s) for s in seeds))


@dataclass(frozen=True)
class StepSettings:
    """The config values the step reads, as plain Python (read once, not per step)."""

    discrete_timesteps: Optional[torch.Tensor]  # vanilla mode's schedule; None in fixed mode
    timestep_mu: float
    timestep_sigma: float
    cfg_ratio: float
    min_snr_gamma: Optional[float]

    @classmethod
    def from_config(cls, training: DictConfig, model: DictConfig) -> "StepSettings":
        vanilla = training.mode == "vanilla"
        return cls(torch.tensor(list(training.discrete_timesteps)) if vanilla else None, model.timestep_mu,
                   model.timestep_sigma, training.cfg_ratio, training.min_snr_gamma)


def sample_timesteps(settings: StepSettings, n: int, gen: torch.Generator) -> torch.Tensor:
    """`fixed`: the max of two logit-normal draws (r = t). `vanilla`: uniform over the discrete turbo schedule."""
    if settings.discrete_timesteps is not None:
        schedule = settings.discrete_timesteps
        return schedule[torch.randint(len(schedule), (n,), generator=gen)]
    draws = torch.sigmoid(torch.randn(2, n, generator=gen) * settings.timestep_sigma + settings.timestep_mu)
    return draws.max(dim=0).values


def drop_condition(encoder_hidden_states: torch.Tensor, null_emb: torch.Tensor, ratio: float,
                   gen: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """Replace each sample's whole text condition by the null embedding with probability `ratio`."""
    dropped = torch.rand(encoder_hidden_states.shape[0], generator=gen) < ratio  # no early exit: that would sync
    null = null_emb.to(encoder_hidden_states).expand_as(encoder_hidden_states)
    keep = dropped.to(encoder_hidden_states.device)[:, None, None]
    return torch.where(keep, null, encoder_hidden_states), dropped


def flow_matching_loss(transformer: torch.nn.Module, batch: Dict[str, Any], null_emb: torch.Tensor,
                       settings: StepSettings, gens: StepGenerators) -> Tuple[torch.Tensor, torch.Tensor]:
    """The masked velocity MSE for one batch with freshly drawn timesteps, noise and condition dropout,
    and the timesteps it used."""
    x0 = batch["target_latents"]
    t_cpu = sample_timesteps(settings, x0.shape[0], gens.timesteps)
    noise = torch.randn(x0.shape, generator=gens.noise).to(x0)
    encoder_hidden_states, _ = drop_condition(batch["encoder_hidden_states"], null_emb, settings.cfg_ratio,
                                              gens.condition_dropout)
    loss = velocity_loss(transformer, batch, t_cpu.to(x0), noise, encoder_hidden_states, settings.min_snr_gamma)
    return loss, t_cpu


def velocity_loss(transformer: torch.nn.Module, batch: Dict[str, Any], t: torch.Tensor, noise: torch.Tensor,
                  encoder_hidden_states: torch.Tensor, min_snr_gamma: Optional[float] = None) -> torch.Tensor:
    """x_t = t*noise + (1-t)*x0; MSE between the prediction and noise - x0 over the valid frames."""
    return velocity_losses(transformer, batch, t, noise, encoder_hidden_states, min_snr_gamma).mean()


def velocity_losses(transformer: torch.nn.Module, batch: Dict[str, Any], t: torch.Tensor, noise: torch.Tensor,
                    encoder_hidden_states: torch.Tensor, min_snr_gamma: Optional[float] = None) -> torch.Tensor:
    """`velocity_loss` of each sample of the batch."""
    x0 = batch["target_latents"]
    xt = t[:, None, None] * noise + (1 - t[:, None, None]) * x0
    prediction = transformer(hidden_states=xt, timestep=t, timestep_r=t, encoder_hidden_states=encoder_hidden_states,
                             context_latents=batch["context_latents"], return_dict=False)[0]
    per_frame = (prediction.float() - (noise - x0).float()).pow(2).mean(dim=-1)
    mask = batch["attention_mask"].float()
    per_sample = (per_frame * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    if min_snr_gamma is not None:
        per_sample = per_sample * min_snr_weight(t.float(), min_snr_gamma)
    return per_sample


def min_snr_weight(t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma for a velocity target on the straight path x_t = (1-t)*x0 + t*noise.

    Min-SNR (Hang et al. 2023, arXiv:2303.09556, section 3.4) weights the clean-data error ||x0 - x0_hat||^2 by
    min(snr, gamma), snr = ((1-t)/t)^2, and divides by how much larger the trained target's error is: by snr for
    noise prediction, by snr + 1 for the VP v-prediction (diffusers' train_text_to_image.py does the same). Here
    x0_hat = x_t - t*v_hat, so ||v - v_hat||^2 = ||x0 - x0_hat||^2 / t^2 and the velocity weight is
    min(snr, gamma) * t^2 = min((1-t)^2, gamma*t^2). The noise-prediction form min(snr, gamma)/snr would give
    a weight of 1 wherever snr < gamma, i.e. most of the noisy half of training."""
    return torch.minimum((1 - t).pow(2), gamma * t.pow(2))
