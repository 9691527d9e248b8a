"""The memory model: weight bytes are exact (what a loaded DiT really holds, per `model.quantize`), and the
prediction follows the settings that move it."""

import pytest
import torch
from omegaconf import OmegaConf

from sidestep.models.source import model_source
from sidestep.training.memory import loaded_bytes, predict, weight_bytes


@pytest.mark.parametrize("mode", [None, "int8", "nf4"])
def test_weight_bytes_are_what_the_loaded_dit_holds(make_cfg, mode):
    cfg = make_cfg(*([f"model.quantize={mode}"] if mode else []))
    assert weight_bytes(cfg.model, mode, torch.float32) == loaded_bytes(model_source(cfg.model).dit().transformer)


def test_the_2b_dit_weighs_2_9_gb_in_bf16_and_a_quarter_of_that_in_nf4(make_cfg):
    model = make_cfg("model=turbo", "data.dataset_dir=.", experiment=None).model
    bf16, int8, nf4 = (weight_bytes(model, mode, torch.bfloat16) / 2**30 for mode in (None, "int8", "nf4"))
    assert 2.9 < bf16 < 3.0 and 0.5 < int8 / bf16 < 0.53 and 0.28 < nf4 / bf16 < 0.3  # 1.57 B parameters


def test_the_prediction_follows_quantization_checkpointing_crop_and_sampling(make_cfg):
    cfg = make_cfg("sample.every_n_epochs=10")
    plain, nf4 = predict(cfg, torch.float32, 750), predict(make_cfg("model.quantize=nf4"), torch.float32, 750)
    assert nf4.weights < plain.weights and "nf4" in nf4.describe() and nf4.describe().startswith("~")
    OmegaConf.update(cfg, "trainer.gradient_checkpointing", True)
    checkpointed = predict(cfg, torch.float32, 750)
    assert checkpointed.activations < 0.8 * plain.activations
    assert predict(cfg, torch.float32, 3000).activations > 3 * checkpointed.activations
    OmegaConf.update(cfg, "sample.every_n_epochs", None)
    assert predict(cfg, torch.float32, 750).sampling == 0 < checkpointed.sampling


def test_the_memory_row_reads_as_the_peak_it_adds_up_to():
    """Issue 27: "~16.6 MB peak: DiT weights 0.9 MB, adapter + gradients 0.2 MB, optimizer 0.2 MB, activations
    5.0 MB, samples 15.3 MB" listed parts summing to 21.6 MB: activations and samples are never held at once."""
    from sidestep.training.memory import MemoryPlan

    mb = 2**20
    plan = MemoryPlan(int(0.9 * mb), int(0.2 * mb), int(0.2 * mb), 5 * mb, int(15.3 * mb), "fp32")
    assert plan.describe() == ("~16.6 MB peak: DiT weights 0.9 MB (fp32), adapter + gradients 0.2 MB, optimizer "
                               "0.2 MB, and the larger of activations 5.0 MB and, while sampling, 15.3 MB")
    assert MemoryPlan(mb, mb, mb, 5 * mb, 0, "fp32").describe().endswith("optimizer 1.0 MB, activations 5.0 MB")


def test_the_optimizer_state_is_what_its_schema_says_per_parameter(make_cfg):
    """An optimizer the memory model never heard of is counted at the bytes its schema states, not AdamW's 8."""
    from dataclasses import dataclass
    from typing import ClassVar

    from sidestep.adapters.attach import trainable_parameters
    from sidestep.config.parts import AdamWConfig

    @dataclass
    class HeavyState(AdamWConfig):
        state_bytes_per_param: ClassVar[float] = 40.0

    cfg = make_cfg()
    adamw = predict(cfg, torch.float32, 100)
    cfg.optimizer = OmegaConf.structured(HeavyState(lr=cfg.optimizer.lr))
    heavy = predict(cfg, torch.float32, 100)
    assert adamw.optimizer == 8 * trainable_parameters(cfg) and heavy.optimizer == 5 * adamw.optimizer
    assert heavy.peak - adamw.peak == 4 * adamw.optimizer
