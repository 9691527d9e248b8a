"""The training step computes exactly the formulas of training/flow_matching.py's docstring: what the DiT receives (x_t, t, r, the condition after
CFG dropout) and the loss are recomputed here from the formulas, on a fixed batch with fixed generators and the
tiny DiT, and the timestep samplers are checked against their distributions."""

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from sidestep.models.source import model_source
from sidestep.training.flow_matching import (
    StepGenerators,
    StepSettings,
    flow_matching_loss,
    min_snr_weight,
    sample_timesteps,
)
from tests.helpers.configs import compose_cfg

TURBO_SCHEDULE = [1.0, 0.9545454545454546, 0.9, 0.8333333333333334, 0.75, 0.6428571428571429, 0.5, 0.3]
MU, SIGMA = -0.3, 0.8  # not the defaults, so a sampler that ignores the model's values is caught
SEED, BATCH, FRAMES = 3, 4, 12


def settings(mode="fixed", cfg_ratio=0.5, gamma=None, mu=MU, sigma=SIGMA) -> StepSettings:
    training = OmegaConf.create({"mode": mode, "cfg_ratio": cfg_ratio, "min_snr_gamma": gamma,
                                 "discrete_timesteps": TURBO_SCHEDULE if mode == "vanilla" else []})
    return StepSettings.from_config(training, OmegaConf.create({"timestep_mu": mu, "timestep_sigma": sigma}))


@pytest.fixture(scope="module")
def dit(cache_dir):
    return model_source(compose_cfg(cache_dir).model).dit()


@pytest.fixture(scope="module")
def batch():
    """Four samples, the third with 4 padded frames at its end, the last with a single valid frame."""
    gen = torch.Generator().manual_seed(11)
    mask = torch.ones(BATCH, FRAMES)
    mask[2, 8:] = 0
    mask[3, 1:] = 0
    return {"target_latents": torch.randn(BATCH, FRAMES, 64, generator=gen), "attention_mask": mask,
            "encoder_hidden_states": torch.randn(BATCH, 5, 64, generator=gen),
            "context_latents": torch.randn(BATCH, FRAMES, 128, generator=gen)}


def run_step(dit, batch, step_settings):
    """Our loss, the timesteps it reports, and the keyword arguments the DiT was called with."""
    seen = {}
    hook = dit.transformer.register_forward_pre_hook(lambda module, args, kwargs: seen.update(kwargs),
                                                     with_kwargs=True)
    try:
        loss, t = flow_matching_loss(dit.transformer, batch, dit.null_condition_emb, step_settings,
                                     StepGenerators.from_seed(SEED))
    finally:
        hook.remove()
    return loss, t, seen


def expected_step(dit, batch, step_settings, fixed=True):
    """The step's formulas from scratch, on the same generator streams: t, noise, dropped rows, DiT inputs and loss."""
    gens = StepGenerators.from_seed(SEED)
    x0 = batch["target_latents"]
    if fixed:  # max of two draws of sigmoid(N(mu, sigma))
        a, b = (torch.sigmoid(MU + SIGMA * z) for z in torch.randn(2, BATCH, generator=gens.timesteps))
        t = torch.maximum(a, b)
    else:  # uniform over the turbo schedule
        t = torch.tensor(TURBO_SCHEDULE)[torch.randint(8, (BATCH,), generator=gens.timesteps)]
    noise = torch.randn(x0.shape, generator=gens.noise)
    dropped = torch.rand(BATCH, generator=gens.condition_dropout) < step_settings.cfg_ratio
    condition = batch["encoder_hidden_states"].clone()
    condition[dropped] = dit.null_condition_emb[0]
    tt = t.view(-1, 1, 1)
    x_t = tt * noise + (1 - tt) * x0
    with torch.no_grad():
        prediction = dit.transformer(hidden_states=x_t, timestep=t, timestep_r=t, encoder_hidden_states=condition,
                                     context_latents=batch["context_latents"], return_dict=False)[0]
    mask = batch["attention_mask"]
    frame_error = ((prediction - (noise - x0)) ** 2).mean(dim=2)
    per_sample = (frame_error * mask).sum(dim=1) / mask.sum(dim=1)
    return {"t": t, "x_t": x_t, "condition": condition, "dropped": dropped, "per_sample": per_sample}


def test_fixed_mode_feeds_the_dit_the_documented_inputs_and_loss(dit, batch):
    loss, t, seen = run_step(dit, batch, settings())
    want = expected_step(dit, batch, settings())
    assert 0 < int(want["dropped"].sum()) < BATCH  # the seed drops some conditions and keeps others
    assert torch.allclose(t, want["t"], atol=1e-7)
    assert torch.allclose(seen["timestep"], want["t"], atol=1e-7)
    assert torch.allclose(seen["timestep_r"], want["t"], atol=1e-7)  # r = t
    assert torch.allclose(seen["hidden_states"], want["x_t"], atol=1e-6)
    assert torch.equal(seen["encoder_hidden_states"], want["condition"])
    assert torch.equal(seen["context_latents"], batch["context_latents"])
    assert torch.allclose(loss, want["per_sample"].mean(), rtol=1e-5)


def test_vanilla_mode_uses_the_turbo_schedule_for_t_and_r_and_keeps_the_condition(dit, batch):
    step = settings("vanilla", cfg_ratio=0.0)
    loss, t, seen = run_step(dit, batch, step)
    want = expected_step(dit, batch, step, fixed=False)
    assert torch.equal(t, want["t"]) and torch.equal(seen["timestep"], want["t"])
    assert torch.equal(seen["timestep_r"], want["t"])
    assert torch.allclose(seen["hidden_states"], want["x_t"], atol=1e-6)
    assert torch.equal(seen["encoder_hidden_states"], batch["encoder_hidden_states"])
    assert torch.allclose(loss, want["per_sample"].mean(), rtol=1e-5)


def test_min_snr_gamma_weights_each_sample_by_the_velocity_form(dit, batch):
    """Weight min(snr, gamma) * t^2 (snr = ((1-t)/t)^2): Min-SNR's x0-space weight min(snr, gamma) carried over
    to a velocity target, since ||v - v_hat||^2 = ||x0 - x0_hat||^2 / t^2 on the straight path."""
    gamma = 2.0
    loss, _, _ = run_step(dit, batch, settings(gamma=gamma))
    want = expected_step(dit, batch, settings(gamma=gamma))
    snr = ((1 - want["t"]) / want["t"]) ** 2
    weight = torch.minimum(snr, torch.tensor(gamma)) * want["t"] ** 2
    assert torch.allclose(loss, (weight * want["per_sample"]).mean(), rtol=1e-5)
    assert not torch.allclose(loss, want["per_sample"].mean(), rtol=1e-2)


@pytest.mark.parametrize("t, weight", [(0.1, 5 * 0.01), (0.25, 5 * 0.0625), (0.5, 0.25), (0.9, 0.01), (1.0, 0.0)])
def test_min_snr_weight_at_chosen_timesteps(t, weight):
    """gamma 5: snr(0.1) = 81 and snr(0.25) = 9 are capped at 5; snr(0.5) = 1, snr(0.9) = 1/81, snr(1) = 0."""
    assert float(min_snr_weight(torch.tensor(t), 5.0)) == pytest.approx(weight, abs=1e-7)


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    return float(np.abs(np.searchsorted(a, grid, side="right") / len(a)
                        - np.searchsorted(b, grid, side="right") / len(b)).max())


def ks_critical(n: int, m: int, alpha: float = 1e-3) -> float:
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


def test_fixed_mode_t_follows_the_max_of_two_logit_normals_with_the_models_mu_sigma():
    n = 40_000
    ours = sample_timesteps(settings(), n, torch.Generator().manual_seed(0)).double().numpy()
    rng = np.random.default_rng(1)
    reference = np.maximum(*(1 / (1 + np.exp(-(MU + SIGMA * rng.standard_normal(n)))) for _ in range(2)))
    assert ks_statistic(ours, reference) < ks_critical(n, n)
    one_logit_normal = 1 / (1 + np.exp(-(MU + SIGMA * rng.standard_normal(n))))
    assert ks_statistic(ours, one_logit_normal) > 5 * ks_critical(n, n)  # the test can tell the difference
    other_mu = np.maximum(*(1 / (1 + np.exp(-(-0.4 + 1.0 * rng.standard_normal(n)))) for _ in range(2)))
    assert ks_statistic(ours, other_mu) > ks_critical(n, n)


class InputSpy(torch.nn.Module):
    """Stands in for the DiT: keeps what it was called with and predicts zero velocity."""

    def forward(self, hidden_states, **kwargs):
        self.seen = dict(kwargs, hidden_states=hidden_states)
        return (torch.zeros_like(hidden_states),)


@pytest.mark.parametrize("ratio", [0.0, 0.3])
def test_the_step_drops_the_condition_at_the_configured_rate(ratio):
    n = 8000
    gen = torch.Generator().manual_seed(5)
    b = {"target_latents": torch.randn(n, 2, 4, generator=gen), "attention_mask": torch.ones(n, 2),
         "encoder_hidden_states": torch.randn(n, 3, 4, generator=gen), "context_latents": torch.zeros(n, 2, 8)}
    null = torch.full((1, 1, 4), 9.0)
    spy = InputSpy()
    flow_matching_loss(spy, b, null, settings(cfg_ratio=ratio), StepGenerators.from_seed(SEED))
    rate = (spy.seen["encoder_hidden_states"] == null).all(dim=2).all(dim=1).float().mean().item()
    assert abs(rate - ratio) < 4 * math.sqrt(ratio * (1 - ratio) / n) + 1e-9, rate


def test_bf16_latents_get_bf16_noise_and_timesteps():
    """Noise, t and the null condition follow the batch's dtype (and device): nothing is promoted to float32."""
    gen = torch.Generator().manual_seed(6)
    b = {"target_latents": torch.randn(2, 4, 8, generator=gen).bfloat16(), "attention_mask": torch.ones(2, 4),
         "encoder_hidden_states": torch.randn(2, 3, 8, generator=gen).bfloat16(),
         "context_latents": torch.zeros(2, 4, 16, dtype=torch.bfloat16)}
    spy = InputSpy()
    null = torch.ones(1, 1, 8)  # float32, as read from the checkpoint
    loss, _ = flow_matching_loss(spy, b, null, settings(cfg_ratio=0.99), StepGenerators.from_seed(SEED))
    condition = spy.seen["encoder_hidden_states"]
    assert (condition == 1).all(), "both conditions dropped"
    assert spy.seen["hidden_states"].dtype == spy.seen["timestep"].dtype == condition.dtype == torch.bfloat16
    assert loss.dtype == torch.float32


def test_each_process_draws_its_own_noise_timesteps_and_dropout():
    """Several GPUs: replicas with the same seed must not train on the same noise (and the same seed and process
    must give the same streams again, for exact resume)."""
    def seeds(process):
        return [g.initial_seed() for g in vars(StepGenerators.from_seed(42, process)).values()]

    assert all(a != b for a, b in zip(seeds(0), seeds(1)))
    assert seeds(1) == seeds(1)
