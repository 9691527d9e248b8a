"""What an adapter type knows of itself, on its schema (no torch): its name in words, its own checks, whether PEFT can
inject it; and that a config those checks refuse answers without importing torch, diffusers, PEFT or transformers."""

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import ClassVar

import pytest
from omegaconf import OmegaConf

from sidestep.adapters.label import adapter_words
from sidestep.config import checked_train_config
from sidestep.config.parts import ADAPTER_SCHEMAS, RankedAdapterConfig
from sidestep.config.trust import ALLOW_ENV
from sidestep.errors import ConfigError
from tests.conftest import compose_cfg

VERA = "sidestep.adapters.vera.Vera"  # never imported: the checks refuse it from its schema


@dataclass
class VeraAdapterConfig(RankedAdapterConfig):
    """VeRA: one pair of random matrices shared by every layer, so `add_adapter` cannot inject it layer by layer."""

    _target_: str = VERA
    label: ClassVar[str] = "VeRA"
    injectable: ClassVar[bool] = False


@pytest.fixture
def vera(monkeypatch):
    monkeypatch.setitem(ADAPTER_SCHEMAS, "vera", VeraAdapterConfig)
    monkeypatch.setenv(ALLOW_ENV, VERA)


def test_a_type_add_adapter_cannot_inject_is_refused_in_one_line(vera, cache_dir):
    cfg = OmegaConf.create(OmegaConf.to_container(compose_cfg(cache_dir, check=False)))  # a plain dict, as saved
    cfg.adapter = {"_target_": VERA, "rank": 4}
    with pytest.raises(ConfigError, match=r"^adapter._target_: sidestep.adapters.vera.Vera: diffusers' add_adapter "
                                          r"cannot put a VeRA adapter on the DiT .*; use adapter=lora\|lokr\|loha\|oft$"):
        checked_train_config(cfg)


def test_a_run_is_named_by_the_schema_its_target_picks(vera):
    assert adapter_words({"adapter": {"_target_": VERA, "rank": 4, "alpha": 8}}) == "VeRA rank 4 / alpha 8"
    assert adapter_words({"adapter": {"_target_": "sidestep.adapters.oft.Oft", "block_size": 16}}) == \
        "OFT block size 16"
    assert adapter_words({"adapter": {"_target_": "sidestep.adapters.lora.Lora", "rank": 8, "alpha": 16,
                                      "use_dora": True}}) == "DoRA rank 8 / alpha 16"


def test_the_rank_to_width_rule_is_lora_s_alone(make_cfg):
    """The demo's narrowest target is 32 features wide: LoRA's B·A cannot have rank 48 there; LoKr's can."""
    assert make_cfg("adapter=lokr", "adapter.rank=48").adapter.rank == 48
    assert make_cfg("adapter=loha", "adapter.rank=48").adapter.rank == 48
    with pytest.raises(ConfigError, match=r"^adapter.rank: 48 is larger than k_proj \(64 -> 32 features\)"):
        make_cfg("adapter=lora", "adapter.rank=48")


@pytest.mark.parametrize("overrides, message", [
    (("adapter=oft", "adapter.block_size=7"), "adapter.block_size: 7 does not divide"),
    (("adapter=oft", "adapter.module_dropout=1.0"), "adapter.module_dropout: must be in [0, 1)"),
    (("adapter=lokr", "adapter.rank_dropout=-0.1"), "adapter.rank_dropout: must be in [0, 1)"),
    (("adapter=loha", "adapter.module_dropout=1.5"), "adapter.module_dropout: must be in [0, 1)"),
])
def test_each_type_checks_its_own_knobs(make_cfg, overrides, message):
    with pytest.raises(ConfigError) as refused:
        make_cfg(*overrides)
    assert str(refused.value).startswith(message)


REFUSE = """
import json, sys
from sidestep.train import main
from sidestep.ui.app import run_app
codes = []
for overrides in json.loads(sys.argv[1]):
    sys.argv = ["train", "experiment=demo", "ui.yes=true", "ui.plain=true", *overrides]
    try:
        run_app(main, check_schema=True)
    except SystemExit as ended:
        codes.append(ended.code)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "diffusers", "peft", "transformers"})
print(json.dumps({"codes": codes, "heavy": heavy}))
"""


@pytest.mark.slow
def test_a_config_the_checks_refuse_imports_no_torch(tmp_path, cache_dir):
    """Each refusal comes from a check that once built the adapter type (its module imports torch and PEFT)."""
    refused = [["adapter=oft", "adapter.block_size=7"], ["model.quantize=nf4", "adapter=dora"],
               ["adapter=lokr", "adapter.rank_dropout=1.5"], ["adapter.rank=0"], ["optimizer.lr=0"]]
    refused = [[*r, f"data.synthetic.cache_dir={cache_dir}", f"hydra.run.dir={tmp_path / str(i)}"]
               for i, r in enumerate(refused)]
    done = subprocess.run([sys.executable, "-c", REFUSE, json.dumps(refused)], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["codes"] == [2] * len(refused), done.stderr
    assert len([line for line in done.stderr.splitlines() if line.startswith("error: ")]) == len(refused)
    assert out["heavy"] == []
