"""What the optimizer is told: every schedule's learning rate at chosen steps equals its formula, Prodigy gets a
constant one, gradients above trainer.max_grad_norm reach the optimizer scaled to it, a skipped non-finite step
updates nothing, and 8-bit AdamW really keeps 8-bit state and follows AdamW."""

import math

import pytest
import torch
from hydra.utils import instantiate
from torch.optim.lr_scheduler import LambdaLR

from sidestep.errors import ConfigError

LR, WARMUP, TOTAL = 1e-3, 10, 110  # decay runs from step 10 to step 110


def lr_at(cfg, step: int) -> float:
    """The learning rate the optimizer uses at optimizer step `step`, as the trainer builds the schedule."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = LambdaLR(optimizer, instantiate(cfg.scheduler)(total_steps=TOTAL))
    for _ in range(step):
        optimizer.step()
        scheduler.step()
    return optimizer.param_groups[0]["lr"]


def warmup(step: int, start: float = 0.1) -> float:
    """Linear from `start` (10 % unless scheduler.warmup_start_factor says) at step 0 to 100 % at the end of warm-up."""
    return start + (1 - start) * step / WARMUP


def progress(step: int) -> float:
    """0 at the end of warm-up, 1 at the last step, and 1 after it (a longer run stays at the end value)."""
    return min(1.0, (step - WARMUP) / (TOTAL - WARMUP))


def sgdr(step: int, cycles: int, eta_min: float) -> float:
    """Loshchilov & Hutter's SGDR with equal periods T_i = decay steps / cycles: eta_min + (1 - eta_min)(1 +
    cos(pi T_cur / T_i)) / 2, T_cur the steps since the last restart; the floor from the last step on."""
    if step >= TOTAL:
        return eta_min
    period = (TOTAL - WARMUP) / cycles
    since_restart = (step - WARMUP) - period * math.floor((step - WARMUP) / period)
    return eta_min + (1 - eta_min) * (1 + math.cos(math.pi * since_restart / period)) / 2


def polynomial(step: int, power: float, end: float) -> float:
    """transformers' polynomial decay, in fractions of the peak: (1 - end)(1 - done) ** power + end."""
    return (1 - end) * (1 - progress(step)) ** power + end


# name: (overrides beyond the warm-up, the multiplier at a step)
FORMULAS = {
    "cosine": ((), lambda s: warmup(s) if s < WARMUP else 0.5 * (1 + math.cos(math.pi * progress(s)))),
    "linear": ((), lambda s: warmup(s) if s < WARMUP else 1 - progress(s)),
    "constant_with_warmup": ((), lambda s: warmup(s) if s < WARMUP else 1.0),
    "constant": ((), lambda s: 1.0),
    "cosine_with_restarts": (("scheduler.cycles=4", "scheduler.eta_min=0.2"),
                             lambda s: warmup(s) if s < WARMUP else sgdr(s, 4, 0.2)),
    "polynomial": (("scheduler.power=3", "scheduler.end_factor=0.1"),
                   lambda s: warmup(s) if s < WARMUP else polynomial(s, 3, 0.1)),
}
STEPS = (0, 5, WARMUP, 20, 34, 35, 47, 60, 85, 97, TOTAL - 1, TOTAL, TOTAL + 30)  # warm-up; 4 cycles of 25; end; after


@pytest.mark.parametrize("name", FORMULAS)
def test_every_schedule_gives_its_formulas_lr(make_cfg, name):
    overrides, formula = FORMULAS[name]
    cfg = make_cfg(f"scheduler={name}", f"scheduler.warmup_steps={WARMUP}", *overrides)
    got = [lr_at(cfg, s) / LR for s in STEPS]
    assert got == pytest.approx([formula(s) for s in STEPS], abs=1e-9)


def test_schedule_values_at_the_landmarks():
    """The formulas above, spelled out: 10 % at the start, full at the end of warm-up, half way down in the
    middle of the decay, zero at the end; restarts at the top after each 25 steps; the polynomial's cube."""
    assert [FORMULAS["cosine"][1](s) for s in (0, WARMUP, 60, TOTAL)] == pytest.approx([0.1, 1.0, 0.5, 0.0])
    assert FORMULAS["cosine"][1](35) == pytest.approx(0.5 + 0.5 * math.sqrt(0.5))
    assert [FORMULAS["linear"][1](s) for s in (35, 60, 85)] == pytest.approx([0.75, 0.5, 0.25])
    restarts = FORMULAS["cosine_with_restarts"][1]
    assert [restarts(s) for s in (10, 35, 60, 85, TOTAL)] == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.2])
    assert restarts(22.5) == pytest.approx(0.6) and restarts(34) < 0.21  # half way down a cycle, then the floor
    assert FORMULAS["polynomial"][1](60) == pytest.approx(0.1 + 0.9 / 8)


def test_warmup_start_factor_sets_where_warm_up_starts(make_cfg):
    cfg = make_cfg("scheduler=cosine", f"scheduler.warmup_steps={WARMUP}", "scheduler.warmup_start_factor=0.4")
    assert [lr_at(cfg, s) / LR for s in (0, 5, WARMUP)] == pytest.approx([0.4, 0.7, 1.0])
    assert warmup(5, 0.4) == pytest.approx(0.7)


def test_cosine_with_restarts_restarts_and_reaches_its_floor(make_cfg):
    """Each cycle falls to just above the floor, then the next step is the full rate again; the run ends on the
    floor and never goes below it."""
    cfg = make_cfg("scheduler=cosine_with_restarts", f"scheduler.warmup_steps={WARMUP}", "scheduler.cycles=4",
                   "scheduler.eta_min=0.2")
    rates = [lr_at(cfg, s) / LR for s in range(TOTAL + 3)]
    for end_of_cycle in (34, 59, 84):
        assert 0.2 < rates[end_of_cycle] < 0.21 and rates[end_of_cycle + 1] == pytest.approx(1.0)
    assert rates[TOTAL:] == pytest.approx([0.2] * 3) and min(rates[WARMUP:]) == pytest.approx(0.2)


def test_one_cycle_without_a_floor_is_the_plain_cosine_and_power_one_the_linear(make_cfg):
    one = make_cfg("scheduler=cosine_with_restarts", "scheduler.cycles=1", f"scheduler.warmup_steps={WARMUP}")
    straight = make_cfg("scheduler=polynomial", "scheduler.power=1", f"scheduler.warmup_steps={WARMUP}")
    cosine, linear = FORMULAS["cosine"][1], FORMULAS["linear"][1]
    assert [lr_at(one, s) / LR for s in STEPS] == pytest.approx([cosine(s) for s in STEPS], abs=1e-9)
    assert [lr_at(straight, s) / LR for s in STEPS] == pytest.approx([linear(s) for s in STEPS], abs=1e-9)


@pytest.mark.parametrize("schedule, last", [("Linear", 0.0), ("Cosine", 0.0), ("ConstantWithWarmup", 1.0),
                                            ("CosineWithRestarts", 0.0), ("Polynomial", 0.0)])
def test_a_one_step_decay_reaches_its_end_value_at_once(schedule, last):
    from sidestep.training import lr_schedules

    multiplier = getattr(lr_schedules, schedule)(warmup_steps=3, total_steps=4)
    assert [multiplier(s) for s in range(5)] == pytest.approx([0.1, 0.4, 0.7, 1.0, last])


@pytest.mark.parametrize("override, key", [
    ("scheduler=cosine_with_restarts scheduler.cycles=0", "scheduler.cycles"),
    ("scheduler=cosine_with_restarts scheduler.eta_min=1", "scheduler.eta_min"),
    ("scheduler=cosine_with_restarts scheduler.eta_min=-0.1", "scheduler.eta_min"),
    ("scheduler=polynomial scheduler.power=0", "scheduler.power"),
    ("scheduler=polynomial scheduler.end_factor=1.5", "scheduler.end_factor"),
    ("scheduler=linear scheduler.warmup_start_factor=-0.1", "scheduler.warmup_start_factor"),
    ("scheduler=polynomial scheduler.warmup_start_factor=2", "scheduler.warmup_start_factor"),
])
def test_a_schedules_own_knob_out_of_range_is_one_line_naming_it(make_cfg, override, key):
    with pytest.raises(ConfigError) as err:
        make_cfg(*override.split())
    assert str(err.value).startswith(f"{key}: must be") and len(str(err.value).splitlines()) == 1


def test_prodigy_forces_a_constant_learning_rate(make_cfg):
    cfg = make_cfg("optimizer=prodigy", "scheduler=cosine", f"scheduler.warmup_steps={WARMUP}")
    assert cfg.scheduler._target_.endswith(".Constant")
    assert [lr_at(cfg, s) / LR for s in STEPS] == pytest.approx([1.0] * len(STEPS))


class Recorder:
    """Wraps AdamW.step to see, at each optimizer step, the gradient norm and learning rate it was given."""

    def __init__(self, monkeypatch):
        self.grad_norms, self.lrs = [], []
        recorder, real_step = self, torch.optim.AdamW.step

        def step(optimizer, closure=None):
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            recorder.grad_norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
            recorder.lrs.append(optimizer.param_groups[0]["lr"])
            return real_step(optimizer, closure)

        monkeypatch.setattr(torch.optim.AdamW, "step", step)


FIT = ("trainer.max_steps=4", "trainer.epochs=1", "trainer.batch_size=2", "scheduler=cosine",
       "scheduler.warmup_steps=2", "optimizer.lr=0.01", "adapter.rank=4", "adapter.alpha=8", "data.crop_seconds=1")


def test_training_clips_gradients_to_max_grad_norm_and_follows_the_schedule(make_cfg, tmp_path, monkeypatch):
    from sidestep.train import train_adapter

    recorder = Recorder(monkeypatch)
    train_adapter(make_cfg(*FIT, "trainer.max_grad_norm=0.001"), tmp_path / "run")
    assert recorder.grad_norms == pytest.approx([0.001] * 4, rel=1e-3)  # every raw norm was far above 0.001
    # cosine with 2 warm-up steps over 4 steps: 10 %, 55 %, 100 %, then half way down.
    assert [lr / 0.01 for lr in recorder.lrs] == pytest.approx([0.1, 0.55, 1.0, 0.5])


def test_a_skipped_non_finite_step_updates_nothing_and_the_run_goes_on(make_cfg, tmp_path, monkeypatch):
    from sidestep.train import train_adapter
    from sidestep.training import loop

    recorder, real, calls = Recorder(monkeypatch), loop.flow_matching_loss, []

    def poisoned(*args, **kwargs):
        loss, t = real(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 2 else loss), t

    monkeypatch.setattr(loop, "flow_matching_loss", poisoned)
    result = train_adapter(make_cfg(*FIT, "trainer.on_nonfinite=skip", "trainer.max_grad_norm=1e6"), tmp_path / "run")
    assert result.steps == 4 and len(recorder.grad_norms) == 3  # step 2 never reached the optimizer
    assert [lr / 0.01 for lr in recorder.lrs] == pytest.approx([0.1, 1.0, 0.5])  # the schedule still moved on
    assert all(0 < n < 1e6 and math.isfinite(n) for n in recorder.grad_norms)  # below the limit: not rescaled


def test_adamw8bit_keeps_uint8_state_for_large_tensors_and_matches_adamw(make_cfg):
    """bitsandbytes keeps 8-bit state only for tensors of >= 4096 elements; 64 x 128 = 8192 is one."""
    cfg = make_cfg("optimizer=adamw8bit", "optimizer.lr=0.01", "optimizer.weight_decay=0.1")
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(64, 128, generator=gen)
    ours, reference = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    eight_bit = instantiate(cfg.optimizer)([ours])
    adamw = torch.optim.AdamW([reference], lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    for _ in range(3):
        grad = torch.randn(64, 128, generator=gen)
        ours.grad, reference.grad = grad.clone(), grad.clone()
        eight_bit.step()
        adamw.step()
    state = eight_bit.state[ours]
    assert state["state1"].dtype == torch.uint8 and state["state2"].dtype == torch.uint8
    moved = reference.detach() - start
    error = (ours.detach() - reference.detach()).norm() / moved.norm()
    assert error < 0.02, float(error)  # 8-bit quantisation error only; a wrong lr, beta or decay is far off
