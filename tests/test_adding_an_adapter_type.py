"""ARCHITECTURE.md's "where a new thing goes" for an adapter type holds: its schema, its YAML and its module (here
HRA, PEFT's Householder reflections, none of which Side-Step ships) are all it takes to train the demo and export."""

import json
import sys
from dataclasses import dataclass
from typing import ClassVar, Dict, Optional

import pytest

from sidestep.adapters.kind import AdapterType
from sidestep.config.parts import ADAPTER_SCHEMAS, AdapterConfig
from sidestep.config.trust import ALLOW_ENV
from sidestep.run_status import read_status
from tests.helpers.new_parts import option_in_user_config

TARGET = f"{__name__}.Hra"


@dataclass
class HraAdapterConfig(AdapterConfig):
    """File 1, the schema (`config/parts.py`): its knobs, its name in words, its checks."""

    _target_: str = TARGET
    reflections: int = 2  # Householder reflections per target

    label: ClassVar[str] = "HRA"

    @classmethod
    def words(cls, knobs) -> str:
        return f"HRA {knobs.get('reflections')} reflections"


class Hra(HraAdapterConfig, AdapterType):
    """File 3, the module (`adapters/hra.py`): what the type is to PEFT; no knob declared again."""

    peft_type = "HRA"
    formats = ("acestep",)

    def peft_config(self, size):
        from peft import HRAConfig

        return HRAConfig(r=self.reflections, target_modules=size.targets)

    @classmethod
    def from_peft(cls, config) -> "Hra":
        return cls(reflections=config.r)

    def inference_config(self, config):
        return config

    def describe(self, config) -> Dict[str, object]:
        return {"reflections": config.r}

    def comfyui_tensors(self, weights, config, prefix: str, model) -> Optional[dict]:
        return None


@pytest.fixture
def hra_added(tmp_path, monkeypatch, hydra_restored):
    """File 2, the YAML (`conf/adapter/hra.yaml`), in the user's config folder on Hydra's search path."""
    monkeypatch.setenv(ALLOW_ENV, TARGET)
    monkeypatch.setitem(ADAPTER_SCHEMAS, "hra", HraAdapterConfig)
    with option_in_user_config(monkeypatch, tmp_path / "conf", "adapter", "hra"):
        yield


def test_a_new_adapter_type_trains_the_demo_and_exports(hra_added, tmp_path, cache_dir, monkeypatch):
    from sidestep.train import main
    from sidestep.ui.app import run_app

    run_dir = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", [
        "train", "experiment=demo", "adapter=hra", "adapter.reflections=4", "trainer.max_steps=2",
        "sample.every_n_epochs=null", "ui.yes=true", "ui.plain=true", f"data.synthetic.cache_dir={cache_dir}",
        f"hydra.run.dir={run_dir}"])
    run_app(main, check_schema=True)
    assert read_status(run_dir)["state"] == "finished"
    assert list(json.loads((run_dir / "adapter" / "formats.json").read_text())) == ["acestep"]
    config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"]) == ("HRA", 4)
    assert "HRA 4 reflections" in (run_dir / "report.html").read_text()
