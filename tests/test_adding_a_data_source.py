"""ARCHITECTURE.md's "a data source": its schema in `DATA_SCHEMAS` (its knobs, what the rest of the code asks of a
source, and where its samples are) and its YAML in the config tree are all it takes: the checks, the report and the
training run learn about it from the schema, with no other file edited."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from sidestep.config import SyntheticConfig, as_container, checked_train_config, register_schemas
from sidestep.config.data_sources import DATA_SCHEMAS, DataConfig, SampleDir
from sidestep.config.saved import saved_text
from sidestep.config.trust import shipped_targets
from sidestep.data.synthetic import synthetic_dataset
from sidestep.errors import ConfigError
from sidestep.report_pages.run_page import write_run_page
from sidestep.report_pages.runs import read_run
from sidestep.train import train_adapter


@dataclass
class OneStyle(DataConfig):
    """The new source: generated songs of one style, as many as `songs`."""

    _target_: str = f"{__name__}.OneStyle"
    songs: int = 4
    cache_dir: Optional[str] = None

    generated: ClassVar[bool] = True

    @staticmethod
    def words(data: Dict[str, Any]) -> str:
        return f"one style: {data.get('songs')} generated songs"

    @staticmethod
    def check(data: Any, preprocessing: bool) -> None:
        if data.songs < 2:
            raise ConfigError(f"data.songs: must be at least 2 (got {data.songs})")

    @staticmethod
    def paths(data: Any) -> List[str]:
        return ["cache_dir"]

    def folders(self, shape) -> List[SampleDir]:
        settings = OmegaConf.structured(SyntheticConfig(num_samples=self.songs, styles=1, seconds=1.2,
                                                        cache_dir=self.cache_dir))
        return [SampleDir("one style", synthetic_dataset(settings, shape))]


@pytest.fixture
def conf_with_the_source(tmp_path, monkeypatch):
    """A config folder on the search path with `data/one_style.yaml`, and the schema registered as shipped."""
    monkeypatch.setitem(DATA_SCHEMAS, "one_style", OneStyle)
    register_schemas()
    shipped_targets.cache_clear()
    conf = tmp_path / "conf"
    (conf / "data").mkdir(parents=True)
    (conf / "data" / "one_style.yaml").write_text("defaults:\n  - /schema/data/one_style@_here_\n\nnum_workers: 0\n"
                                                  "pin_memory: false\npersistent_workers: false\n")
    yield conf
    monkeypatch.undo()
    shipped_targets.cache_clear()


def config(conf: Path, *overrides: str):
    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        return checked_train_config(compose(config_name="train", overrides=[f"hydra.searchpath=['file://{conf}']", "experiment=demo",
                                                               "data=one_style", "ui.yes=true",
                                                               "sample.every_n_epochs=null", *overrides]))


def test_a_new_data_source_is_checked_trained_on_and_reported(conf_with_the_source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^data.songs: must be at least 2"):  # its own check, from its schema
        config(conf_with_the_source, "data.songs=1")
    cfg = config(conf_with_the_source, "data.cache_dir=cache", "trainer.max_steps=2")
    assert cfg.data.cache_dir == str(tmp_path / "cache")  # its paths, made absolute like every source's
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(saved_text(as_container(cfg)))
    result = train_adapter(cfg, run)
    assert result.steps == 2 and result.final_loss == result.final_loss
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert "one style: 4 generated songs" in write_run_page(read_run(run, run)).read_text()
