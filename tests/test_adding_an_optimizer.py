"""ARCHITECTURE.md, "where a new thing goes": an optimizer, even one whose state is not AdamW's 8 bytes a parameter,
is 2 files -- its schema dataclass (with the facts about it: `state_bytes_per_param`) and its entry in
`OPTIMIZER_SCHEMAS` in `config/parts.py`, and its `conf/optimizer/<name>.yaml`. Added here as a contributor would
(the schema in the registry, the YAML in a config folder on Hydra's search path), it is chosen with
`optimizer=<name>`, trains the demo, and the predicted memory counts its own state size."""

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from omegaconf import OmegaConf

from sidestep.config.parts import OPTIMIZER_SCHEMAS, OptimizerConfig
from tests.helpers.new_parts import option_in_user_config


@dataclass
class SgdConfig(OptimizerConfig):
    """torch's SGD with momentum: one buffer per parameter."""

    state_bytes_per_param: ClassVar[float] = 4.0

    _target_: str = "torch.optim.SGD"
    lr: float = 0.05
    momentum: float = 0.9


@pytest.fixture
def with_sgd(monkeypatch, tmp_path):
    monkeypatch.setitem(OPTIMIZER_SCHEMAS, "sgd", SgdConfig)  # file 1: config/parts.py
    with option_in_user_config(monkeypatch, tmp_path / "config", "optimizer", "sgd"):  # file 2: its YAML
        yield


def test_a_new_optimizer_trains_the_demo_and_its_state_size_sets_the_memory_figure(with_sgd, make_cfg, tmp_path,
                                                                                     monkeypatch):
    from sidestep.adapters.attach import adapter_config, trainable_parameters
    from sidestep.train import train_adapter
    from sidestep.training.memory import predict

    steps, real_step = [], torch.optim.SGD.step

    def step(optimizer, closure=None):
        steps.append(optimizer.param_groups[0]["momentum"])
        return real_step(optimizer, closure)

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    short = ("trainer.max_steps=3", "trainer.batch_size=2", "trainer.gradient_accumulation=1", "data.crop_seconds=1")
    cfg = make_cfg("optimizer=sgd", *short)
    assert OmegaConf.get_type(cfg.optimizer) is SgdConfig and cfg.optimizer.momentum == 0.9
    result = train_adapter(cfg, tmp_path / "run")
    assert result.steps == 3 and steps == [0.9] * 3
    adamw = make_cfg(*short)
    trainable = trainable_parameters(cfg.model, adapter_config(cfg))
    assert predict(cfg, torch.float32, 25).optimizer == 4 * trainable
    assert predict(adamw, torch.float32, 25).optimizer == 8 * trainable
