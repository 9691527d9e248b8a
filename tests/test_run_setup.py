"""Setting a run up: each part is built once and handed down (issue 28, item 3), and the run record is the final
config, holding every value the run used, with nothing written into the config after it is saved (item 5)."""

import collections
import json

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ReadonlyConfigError

import sidestep.config.build
from sidestep.train import train_adapter
from tests.conftest import compose_cfg


@pytest.fixture(scope="module")
def one_run(tmp_path_factory, cache_dir):
    """A demo run of one step with a sample round: the parts each target built, and the config as it was saved."""
    cfg = compose_cfg(cache_dir, "trainer.max_steps=1", "sample.every_n_steps=1", "sample.count=1", "sample.steps=1")
    assert cfg.sample.duration is None  # left to the data: the songs' median length
    run, built, saved = tmp_path_factory.mktemp("setup") / "run", collections.Counter(), []
    instantiate = sidestep.config.build.instantiate

    def counted(node, *args, **kwargs):
        built[node.get("_target_")] += 1
        return instantiate(node, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sidestep.config.build, "instantiate", counted)
        train_adapter(cfg, run, save_config=lambda final: saved.append((final, OmegaConf.to_yaml(final))))
    return run, built, saved


def test_every_part_of_a_run_is_built_once(one_run):
    _, built, _ = one_run
    assert built == {"sidestep.models.tiny.TinyModel": 1, "sidestep.adapters.lora.Lora": 1,
                     "sidestep.config.data_sources.SyntheticSamples": 1, "torch.optim.AdamW": 1,
                     "sidestep.training.lr_schedules.Cosine": 1}


def test_the_saved_config_holds_the_sample_duration_the_samples_used_and_stays_unchanged(one_run):
    run, _, saved = one_run
    (final, text_when_saved), = saved
    rendered = json.loads(next((run / "samples").glob("step-*/*.json")).read_text())
    assert final.sample.duration == rendered["duration"] == rendered["seconds"] == 4.0  # the demo's 4 s songs
    assert OmegaConf.to_yaml(final) == text_when_saved  # nothing wrote into the config after it was saved
    assert OmegaConf.is_readonly(final)
    with pytest.raises(ReadonlyConfigError):
        final.trainer.seed = 1
