"""ARCHITECTURE.md's "where a new thing goes": a model variant (same DiT code, other weights or shape) is one file,
`conf/model/<name>.yaml`. Added here in a temporary config folder on Hydra's search path (as `--config-dir` adds
one), it finds its `acestep-v15-<variant>/` folder and trains the demo for a few steps."""

from hydra import compose, initialize_config_module

from sidestep.config import resolve
from sidestep.models.tiny import write_checkpoints, xl_shaped
from tests.conftest import compose_cfg

VARIANT_YAML = """\
# A variant of another width: its folder is acestep-v15-mine/, and its checkpoint decides the shape.
defaults:
  - /schema/model/base@_here_

variant: mine
arch:
  hidden_size: 80
  intermediate_size: 160
  num_hidden_layers: 3
  num_attention_heads: 8
  num_key_value_heads: 2
  head_dim: 16
  encoder_hidden_size: 64
sampling:
  steps: 4
"""


def test_a_variant_yaml_alone_trains_the_demo_on_its_checkpoint_folder(tmp_path, cache_dir):
    from sidestep.train import train_adapter

    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "model" / "mine.yaml").write_text(VARIANT_YAML)
    checkpoints = tmp_path / "checkpoints"
    write_checkpoints(xl_shaped(compose_cfg(cache_dir).model), checkpoints, variant="mine")
    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            f"hydra.searchpath=[file://{conf}]", "experiment=demo", "model=mine", f"model.checkpoint_dir={checkpoints}", "trainer.max_steps=3", "ui.yes=true",
            "sample.every_n_epochs=null", f"data.synthetic.cache_dir={cache_dir}"])
    cfg = resolve(cfg)
    assert (cfg.model.variant, cfg.model.arch.hidden_size, cfg.model.sampling.steps) == ("mine", 80, 4)
    result = train_adapter(cfg, tmp_path / "run")
    assert result.steps == 3 and (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
