"""The training step draws timesteps and drops conditions the way ACE-Step 1.5 was trained
(training/flow_matching.py), and masks padding."""

import math
from statistics import NormalDist

import torch
from omegaconf import OmegaConf

from sidestep.training.flow_matching import (
    StepGenerators,
    StepSettings,
    drop_condition,
    flow_matching_loss,
    sample_timesteps,
)

MODEL = OmegaConf.create({"timestep_mu": -0.4, "timestep_sigma": 1.0})


TURBO_SCHEDULE = [1.0, 0.9545454545454546, 0.9, 0.8333333333333334, 0.75, 0.6428571428571429, 0.5, 0.3]


def training(mode: str, cfg_ratio: float = 0.15) -> StepSettings:
    cfg = OmegaConf.create({"mode": mode, "cfg_ratio": cfg_ratio, "min_snr_gamma": None,
                            "discrete_timesteps": TURBO_SCHEDULE if mode == "vanilla" else []})
    return StepSettings.from_config(cfg, MODEL)


def test_fixed_mode_draws_the_max_of_two_logit_normals():
    t = sample_timesteps(training("fixed"), 200_000, torch.Generator().manual_seed(0))
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        # P(max(a, b) <= x) = Phi((logit x - mu) / sigma)^2, so the q-quantile is sigmoid(mu + sigma * Phi^-1(sqrt q)).
        expected = 1 / (1 + math.exp(-(-0.4 + NormalDist().inv_cdf(math.sqrt(q)))))
        assert abs(torch.quantile(t, q).item() - expected) < 0.005, q
    assert abs(torch.median(t).item() - 0.54) < 0.01
    plain_logit_normal_median = 1 / (1 + math.exp(0.4))
    assert torch.median(t).item() > plain_logit_normal_median + 0.1


def test_vanilla_mode_draws_only_the_discrete_turbo_schedule_uniformly():
    t = sample_timesteps(training("vanilla", 0.0), 80_000, torch.Generator().manual_seed(0))
    values, counts = torch.unique(t, return_counts=True)
    assert sorted(values.tolist()) == sorted(torch.tensor(TURBO_SCHEDULE).tolist())
    assert (counts.float() / len(t) - 1 / 8).abs().max() < 0.01


def test_condition_dropout_replaces_about_cfg_ratio_of_samples_with_the_null_embedding():
    enc = torch.randn(20_000, 3, 8)
    null = torch.full((1, 1, 8), 7.0)
    out, dropped = drop_condition(enc, null, 0.15, torch.Generator().manual_seed(0))
    assert abs(dropped.float().mean().item() - 0.15) < 0.01
    assert torch.equal(out[dropped], null.expand(int(dropped.sum()), 3, 8))
    assert torch.equal(out[~dropped], enc[~dropped])
    out, dropped = drop_condition(enc, null, 0.0, torch.Generator().manual_seed(0))
    assert not dropped.any() and torch.equal(out, enc)


class EchoModel(torch.nn.Module):
    """Predicts the noisy input; enough to check which frames the loss counts."""

    def forward(self, hidden_states, **kwargs):
        return (hidden_states,)


def batch(frames: int, valid: int):
    mask = torch.zeros(1, frames)
    mask[:, :valid] = 1
    return {"target_latents": torch.randn(1, frames, 4), "attention_mask": mask,
            "encoder_hidden_states": torch.randn(1, 2, 4), "context_latents": torch.zeros(1, frames, 8)}


def test_padded_frames_do_not_count_in_the_loss():
    b = batch(10, 6)
    loss, _ = flow_matching_loss(EchoModel(), b, torch.zeros(1, 1, 4), training("fixed"), StepGenerators.from_seed(1))
    b2 = {k: v.clone() for k, v in b.items()}
    b2["target_latents"][:, 6:] = 1e3  # garbage in the padding
    loss2, _ = flow_matching_loss(EchoModel(), b2, torch.zeros(1, 1, 4), training("fixed"), StepGenerators.from_seed(1))
    assert torch.allclose(loss, loss2)


def test_step_generators_are_independent_streams():
    gens = StepGenerators.from_seed(42)
    draws = [g.initial_seed() for g in (gens.timesteps, gens.noise, gens.condition_dropout)]
    assert len(set(draws)) == 3
    assert draws == [g.initial_seed() for g in vars(StepGenerators.from_seed(42)).values()]
