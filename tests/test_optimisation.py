"""What the optimizer is told: every schedule's learning rate at chosen steps equals its formula, Prodigy gets a
constant one, gradients above trainer.max_grad_norm reach the optimizer scaled to it, a skipped non-finite step
updates nothing, and 8-bit AdamW really keeps 8-bit state and follows AdamW."""

import math

import pytest
import torch
from hydra.utils import instantiate
from torch.optim.lr_scheduler import LambdaLR

LR, WARMUP, TOTAL = 1e-3, 10, 110  # decay runs from step 10 to step 110


def lr_at(cfg, step: int) -> float:
    """The learning rate the optimizer uses at optimizer step `step`, as the trainer builds the schedule."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = LambdaLR(optimizer, instantiate(cfg.scheduler)(total_steps=TOTAL))
    for _ in range(step):
        optimizer.step()
        scheduler.step()
    return optimizer.param_groups[0]["lr"]


def warmup(step: int) -> float:
    """Linear from 10 % at step 0 to 100 % at the end of the warm-up."""
    return 0.1 + 0.9 * step / WARMUP


def progress(step: int) -> float:
    """0 at the end of warm-up, 1 at the last step, and 1 after it (a longer run stays at the end value)."""
    return min(1.0, (step - WARMUP) / (TOTAL - WARMUP))


FORMULAS = {
    "cosine": lambda s: warmup(s) if s < WARMUP else 0.5 * (1 + math.cos(math.pi * progress(s))),
    "linear": lambda s: warmup(s) if s < WARMUP else 1 - progress(s),
    "constant_with_warmup": lambda s: warmup(s) if s < WARMUP else 1.0,
    "constant": lambda s: 1.0,
}
STEPS = (0, 5, WARMUP, 35, 60, 85, TOTAL, TOTAL + 30)  # warm-up start, middle, end; decay 1/4, 1/2, 3/4; end; after


@pytest.mark.parametrize("name", FORMULAS)
def test_every_schedule_gives_its_formulas_lr(make_cfg, name):
    cfg = make_cfg(f"scheduler={name}", f"scheduler.warmup_steps={WARMUP}")
    got = [lr_at(cfg, s) / LR for s in STEPS]
    assert got == pytest.approx([FORMULAS[name](s) for s in STEPS], abs=1e-9)


def test_schedule_values_at_the_landmarks():
    """The formulas above, spelled out: 10 % at the start, full at the end of warm-up, half way down in the
    middle of the decay, zero at the end."""
    assert [FORMULAS["cosine"](s) for s in (0, WARMUP, 60, TOTAL)] == pytest.approx([0.1, 1.0, 0.5, 0.0])
    assert FORMULAS["cosine"](35) == pytest.approx(0.5 + 0.5 * math.sqrt(0.5))
    assert [FORMULAS["linear"](s) for s in (35, 60, 85)] == pytest.approx([0.75, 0.5, 0.25])


@pytest.mark.parametrize("shape, last", [("linear", 0.0), ("cosine", 0.0), ("constant_with_warmup", 1.0)])
def test_a_one_step_decay_reaches_its_end_value_at_once(shape, last):
    from sidestep.training import lr_schedules

    schedule = getattr(lr_schedules, shape)(warmup_steps=3, total_steps=4)
    assert [schedule(s) for s in range(5)] == pytest.approx([0.1, 0.4, 0.7, 1.0, last])


def test_an_unknown_schedule_shape_is_an_error_not_a_silent_linear_decay():
    from sidestep.training.lr_schedules import Schedule

    with pytest.raises(ValueError, match="unknown learning-rate schedule shape 'exponential'"):
        Schedule("exponential", warmup_steps=0, total_steps=10)(5)


def test_prodigy_forces_a_constant_learning_rate(make_cfg):
    cfg = make_cfg("optimizer=prodigy", "scheduler=cosine", f"scheduler.warmup_steps={WARMUP}")
    assert cfg.scheduler._target_.endswith(".constant")
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
