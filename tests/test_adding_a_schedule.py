"""ARCHITECTURE.md, "where a new thing goes": a learning-rate schedule with a knob of its own is 3 files -- its
multiplier in `training/lr_schedules.py`, its schema (the knob, its default and its check) with its entry in
`SCHEDULER_SCHEMAS` in `config/parts.py`, and its `conf/scheduler/<name>.yaml`. Added here as a contributor would
(the class in the module, the schema in the registry, the YAML in a config folder on Hydra's search path), it is
chosen with `scheduler=<name>`, its knob is set and checked from the command line, and it drives the demo's
learning rate."""

from dataclasses import dataclass

import pytest
import torch

from sidestep.config.parts import SCHEDULER_SCHEMAS, SchedulerConfig, _require
from sidestep.errors import ConfigError
from sidestep.training import lr_schedules
from tests.helpers.new_parts import option_in_user_config


@dataclass(frozen=True)
class Halving(lr_schedules.Schedule):
    """Halves every `half_life` steps after warm-up."""

    half_life: int = 10

    def __call__(self, step: int) -> float:
        return super().__call__(step) if step < self.warmup_steps else 0.5 ** ((step - self.warmup_steps) / self.half_life)


@dataclass
class HalvingSchedulerConfig(SchedulerConfig):
    _target_: str = "sidestep.training.lr_schedules.Halving"
    half_life: int = 10  # optimizer steps per halving

    @classmethod
    def check(cls, node) -> None:
        super().check(node)
        _require(node.half_life >= 1, "half_life", f"must be at least 1 (got {node.half_life})")


@pytest.fixture
def with_halving(monkeypatch, tmp_path):
    monkeypatch.setattr(lr_schedules, "Halving", Halving, raising=False)  # file 1: training/lr_schedules.py
    monkeypatch.setitem(SCHEDULER_SCHEMAS, "halving", HalvingSchedulerConfig)  # file 2: config/parts.py
    with option_in_user_config(monkeypatch, tmp_path / "config", "scheduler", "halving"):  # file 3: its YAML
        yield


def test_a_new_schedule_with_its_own_knob_drives_the_demo(with_halving, make_cfg, tmp_path, monkeypatch):
    from sidestep.train import train_adapter

    rates, real_step = [], torch.optim.AdamW.step

    def step(optimizer, closure=None):
        rates.append(optimizer.param_groups[0]["lr"])
        return real_step(optimizer, closure)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    cfg = make_cfg("scheduler=halving", "scheduler.half_life=2", "scheduler.warmup_steps=1", "optimizer.lr=0.01",
                   "trainer.max_steps=4", "trainer.batch_size=2", "trainer.gradient_accumulation=1",
                   "data.crop_seconds=1")
    assert train_adapter(cfg, tmp_path / "run").steps == 4
    assert [r / 0.01 for r in rates] == pytest.approx([0.1, 1.0, 0.5 ** 0.5, 0.5])


def test_a_new_schedules_knob_is_checked_in_one_line(with_halving, make_cfg):
    with pytest.raises(ConfigError, match=r"^scheduler\.half_life: must be at least 1 \(got 0\)$"):
        make_cfg("scheduler=halving", "scheduler.half_life=0")


def test_a_new_schedules_knob_is_on_the_studio_form_and_known_to_the_command_line(with_halving):
    from sidestep.config.overrides import check_overrides
    from sidestep.config.trust import CONF_DIR
    from sidestep.studio.forms import fields

    rows = [row for row in fields() if row["key"] == "scheduler.half_life"]
    assert rows == [{"key": "scheduler.half_life", "kind": "int", "choices": None, "default": 10,
                     "only": {"group": "scheduler", "option": "halving"}, "help": "optimizer steps per halving"}]
    check_overrides(["scheduler=halving", "scheduler.half_life=3"], CONF_DIR)
    with pytest.raises(ConfigError, match="did you mean scheduler.half_life"):
        check_overrides(["scheduler=halving", "scheduler.half_lif=3"], CONF_DIR)
