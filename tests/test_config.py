"""The config tree composes for every option, and bad values stop with one line naming the key."""

import sys
from pathlib import Path

import pytest
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from sidestep import train
from sidestep.config import checked_train_config, settled_config
from sidestep.config.overrides import _nearest, check_overrides
from sidestep.config.parts import ConstantSchedulerConfig
from sidestep.errors import ConfigError
from sidestep.ui.app import run_app

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["optimizer", "scheduler", "attention", "vram", "timesteps", "model"])
def test_every_group_option_composes_and_validates(make_cfg, group, tmp_path):
    for option in options(group):
        overrides = [f"{group}={option}"]
        if group == "vram":  # the presets are sized for the 2B DiT: rank 128 does not fit the tiny one's layers
            overrides.append("model=turbo")
        if group in ("model", "vram") and option != "tiny":
            overrides.append(f"model.checkpoint_dir={tmp_path}")
        cfg = make_cfg(*overrides)
        assert cfg is not None


def test_real_variants_carry_the_2b_architecture(make_cfg, tmp_path):
    for variant, turbo in [("turbo", True), ("base", False), ("sft", False)]:
        cfg = make_cfg(f"model={variant}", f"model.checkpoint_dir={tmp_path}")
        arch = cfg.model.arch
        assert (arch.hidden_size, arch.num_hidden_layers, arch.num_attention_heads, arch.num_key_value_heads,
                arch.head_dim, arch.in_channels) == (2048, 24, 16, 8, 128, 192)
        assert cfg.model.is_turbo is turbo
        assert (cfg.model.timestep_mu, cfg.model.timestep_sigma) == (-0.4, 1.0)
        assert "data_proportion" not in cfg.model  # ACE-Step's loss forces r = t, so it would change nothing


def test_seed_defaults(make_cfg, tmp_path):
    cfg = make_cfg(f"model.checkpoint_dir={tmp_path}", f"data.dataset_dir={tmp_path}", experiment=None)
    assert (cfg.adapter.rank, cfg.adapter.alpha, cfg.adapter.dropout, cfg.adapter.bias) == (64, 128, 0.1, "none")  # 2 x rank
    assert list(cfg.adapter.target_modules) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    tr = cfg.trainer
    assert (tr.epochs, tr.batch_size, tr.gradient_accumulation, tr.max_grad_norm, tr.seed) == (100, 1, 4, 1.0, 42)
    assert (tr.device, tr.precision, tr.save_every, tr.log_every, tr.log_heavy_every) == ("auto", "auto", 10, 10, 50)
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (1e-4, 0.01)
    assert cfg.scheduler.warmup_steps == 100 and cfg.timesteps.cfg_ratio == 0.15
    assert cfg.model.variant == "turbo" and list(cfg.attention.blocks) == ["self_attn", "cross_attn"]
    assert (cfg.data.num_workers, cfg.data.pin_memory, cfg.data.prefetch_factor, cfg.data.persistent_workers) == (None, True, 2, True)


def test_vram_preset_sets_memory_knobs_and_explicit_overrides_win(make_cfg):
    cfg = make_cfg("vram=8gb")
    assert cfg.optimizer._target_ == "bitsandbytes.optim.AdamW8bit"
    assert (cfg.adapter.rank, cfg.trainer.gradient_accumulation, cfg.trainer.gradient_checkpointing) == (16, 8, True)
    assert cfg.data.crop_seconds == 30
    cfg = make_cfg("vram=8gb", "adapter.rank=4", "optimizer=adamw", "trainer.gradient_checkpointing=false")
    assert cfg.optimizer._target_ == "torch.optim.AdamW"
    assert cfg.adapter.rank == 4 and cfg.trainer.gradient_checkpointing is False


@pytest.mark.parametrize("preset, rank, alpha, lr, epochs, warmup, save_every", [
    ("quick_test", 16, 32, 3e-4, 10, 10, 5),
    ("recommended", 64, 128, 3e-4, 1000, 100, 50),
    ("high_quality", 128, 256, 2e-4, 1000, 100, 50),
])
def test_experiment_presets_are_side_step_v11s(make_cfg, tmp_path, preset, rank, alpha, lr, epochs, warmup, save_every):
    cfg = make_cfg(f"experiment={preset}", f"model.checkpoint_dir={tmp_path}", f"data.dataset_dir={tmp_path}",
                   experiment=None)
    assert (cfg.adapter.rank, cfg.adapter.alpha, cfg.optimizer.lr, cfg.trainer.epochs) == (rank, alpha, lr, epochs)
    assert (cfg.scheduler.warmup_steps, cfg.trainer.save_every) == (warmup, save_every)
    assert cfg.adapter.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert (cfg.adapter.dropout, cfg.adapter.bias, cfg.attention.blocks) == (0.1, "none", ["self_attn", "cross_attn"])
    assert (cfg.trainer.batch_size, cfg.trainer.gradient_accumulation, cfg.trainer.max_grad_norm) == (1, 4, 1.0)
    assert (cfg.optimizer.weight_decay, cfg.trainer.seed, cfg.timesteps.cfg_ratio) == (0.01, 42, 0.15)
    assert cfg.optimizer._target_.endswith("AdamW8bit") and cfg.scheduler._target_.endswith(".Cosine")
    assert cfg.trainer.gradient_checkpointing is True
    assert make_cfg(f"experiment={preset}", "vram=8gb", f"model.checkpoint_dir={tmp_path}",
                    f"data.dataset_dir={tmp_path}", experiment=None).adapter.rank == 16  # the card's limits win


def test_prodigy_forces_a_constant_schedule_and_warns_about_a_small_lr(make_cfg, caplog):
    cfg = make_cfg("optimizer=prodigy", "scheduler=cosine", "optimizer.lr=1.0")
    assert OmegaConf.get_type(cfg.scheduler) is ConstantSchedulerConfig and cfg.scheduler.warmup_steps == 0
    assert "using scheduler=constant instead of cosine" in caplog.text and "use about 1" not in caplog.text
    make_cfg("optimizer=prodigy", "optimizer.lr=1e-4")
    assert "optimizer=prodigy with optimizer.lr=0.0001: its lr is usually between 0.1 and 10; use about 1" in caplog.text


def test_relative_paths_are_resolved_against_the_launch_dir(make_cfg, tmp_path, monkeypatch):
    (tmp_path / "tensors").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = make_cfg("model=tiny", "adapter.rank=16", "data.dataset_dir=tensors", experiment=None)
    assert cfg.data.dataset_dir == str(tmp_path / "tensors")


@pytest.mark.parametrize("override, key", [
    ("optimizer.lr=0", "optimizer.lr"),
    ("optimizer.lr=-1e-4", "optimizer.lr"),
    ("adapter.rank=0", "adapter.rank"),
    ("adapter.dropout=0.6", "adapter.dropout"),
    ("adapter.dropout=-0.1", "adapter.dropout"),
    ("trainer.batch_size=0", "trainer.batch_size"),
    ("trainer.device=tpu", "trainer.device"),
    ("trainer.max_steps=0", "trainer.max_steps"),
    ("timesteps.cfg_ratio=1.5", "timesteps.cfg_ratio"),
    ("data.crop_seconds=0.01", "data.crop_seconds"),
    ("trainer.seed=-1", "trainer.seed"),
    ("trainer.seed=4294967296", "trainer.seed"),
    ("data.crop_seconds=inf", "data.crop_seconds"),
    ("model.arch.patch_size=0", "model.arch.patch_size"),
    ("adapter.rank=33", "adapter.rank"),  # the tiny DiT's k_proj has 32 outputs
    ("optimizer.lr=inf", "optimizer.lr"),
    ("adapter.alpha=inf", "adapter.alpha"),
    ("model.timestep_mu=nan", "model.timestep_mu"),
    ("scheduler._target_=torch.optim.AdamW", "scheduler._target_"),
    ("scheduler._target_=sidestep.training.nothing", "scheduler._target_"),
    ("run.name=jazz.v2", "run.name"),  # a PEFT adapter name may not hold a dot
])
def test_bad_values_name_the_key(make_cfg, override, key):
    with pytest.raises(ConfigError, match=f"^{key.replace('.', '[.]')}: "):
        make_cfg(override)


@pytest.mark.parametrize("override, message", [
    ("adapter.bias=some", "adapter.bias: 'some' is not one of none, all, lora_only"),
    ("adapter.target_modules=[q_proj,qkv]", "adapter.target_modules: 'qkv' is not one of q_proj, k_proj, v_proj, o_proj, "),
    ("trainer.precision=fp8", "trainer.precision: 'fp8' is not one of auto, bf16, fp16, fp32"),
    ("export.dtype=fp8", "export.dtype: 'fp8' is not one of fp32, bf16, fp16"),
    ("timesteps.mode=fancy", "timesteps.mode: 'fancy' is not one of fixed, vanilla"),
])
def test_a_value_outside_an_options_set_is_refused_naming_the_set(make_cfg, override, message):
    with pytest.raises(ConfigError) as err:
        check_overrides([override], CONF)
    assert str(err.value).startswith(message)
    with pytest.raises(Exception, match="Error merging override"):  # composing it (a saved config, a test) refuses it too
        make_cfg(override)


def test_the_largest_rank_a_layer_allows_is_accepted(make_cfg):
    assert make_cfg("adapter.rank=32").adapter.rank == 32


@pytest.mark.parametrize("args, message", [
    (["optimizer.learning_rate=1e-4"], "optimizer.learning_rate: no such option (did you mean optimizer.lr?)"),
    (["trainer.max_step=3"], "trainer.max_step: no such option (did you mean trainer.max_steps?)"),
    (["scheduler.warmup=3"], "scheduler.warmup: no such option (did you mean scheduler.warmup_steps?)"),
    (["optimizer=adamW"], "optimizer=adamW: no such optimizer option (did you mean optimizer=adamw?)"),
])
def test_an_unknown_override_gets_one_line_with_the_nearest_option(args, message):
    with pytest.raises(ConfigError) as err:
        check_overrides(["-m", "experiment=demo", *args, "+extra=1", "hydra.run.dir=x"], CONF)
    assert str(err.value).startswith(message)


def test_the_nearest_option_ignores_case():
    """With a `radam` beside `adamw`, `adamW` meant `adamw` (a case-sensitive match said radam)."""
    assert _nearest("adamW", ["adafactor", "adamw", "adamw8bit", "prodigy", "radam"], "optimizer=") == \
        " (did you mean optimizer=adamw?)"
    assert _nearest("Trainer.Max_Step", ["trainer.max_steps", "trainer.seed"], "") == \
        " (did you mean trainer.max_steps?)"


def test_a_bad_key_in_a_config_file_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    """Hydra's error on composing it is several lines, of which the first names neither the key nor the value."""
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "x.yaml").write_text("defaults:\n  - /schema/scheduler/base@_here_\n"
                                                   "_target_: sidestep.training.lr_schedules.Constant\nwarmup_stepz: 3\n")
    monkeypatch.setattr(sys, "argv", ["train", "--config-dir", str(tmp_path), "scheduler=x", "experiment=demo"])
    with pytest.raises(SystemExit):
        run_app(train.main)
    err = capsys.readouterr().err
    assert err == "error: in scheduler/x: scheduler.warmup_stepz: Key 'warmup_stepz' not in 'SchedulerConfig'\n"


def test_known_overrides_and_additions_pass_the_override_check():
    check_overrides(["experiment=demo", "vram=8gb", "optimizer=prodigy", "optimizer.betas=[0.9,0.99]", "+extra=1",
                     "model.tiny_stack.vae.decoder_channels=8", "data.synthetic.cache_dir=x", "~sample.prompts"], CONF)


def test_missing_dataset_and_checkpoint_dirs_suggest_the_demo(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="data.dataset_dir.*experiment=demo"):
        make_cfg("model=tiny", f"data.dataset_dir={tmp_path / 'nope'}", experiment=None)
    with pytest.raises(ConfigError, match="model.checkpoint_dir.*experiment=demo"):
        settled_config(make_cfg("model=turbo", f"data.dataset_dir={tmp_path}", experiment=None))
    with pytest.raises(ConfigError, match="model.checkpoint_dir.*does not exist"):
        settled_config(make_cfg("model=base", f"model.checkpoint_dir={tmp_path / 'nope'}", f"data.dataset_dir={tmp_path}",
                         experiment=None))


def test_unknown_group_option_is_refused(make_cfg):
    with pytest.raises(MissingConfigException, match="optimizer/sgd"):
        make_cfg("optimizer=sgd")


def test_a_saved_plain_config_validates_like_a_composed_one(make_cfg):
    cfg = make_cfg()
    plain = OmegaConf.create(OmegaConf.to_yaml(cfg))
    again = checked_train_config(plain)
    assert OmegaConf.to_container(again) == OmegaConf.to_container(cfg)
    plain.adapter.rank = 0
    with pytest.raises(ConfigError, match="adapter.rank"):
        checked_train_config(plain)


def test_run_name_defaults_to_the_dataset_and_start_time_and_names_the_run_dir(make_cfg, tmp_path):
    from sidestep.config.run_name import run_dir_leaf

    (tmp_path / "my jazz.v2").mkdir()
    cfg = make_cfg("model=tiny", "adapter.rank=16", f"data.dataset_dir={tmp_path / 'my jazz.v2'}", experiment=None)
    base, time = cfg.run.name[:-len("20261124-100000")], cfg.run.name[-len("20261124-100000"):]
    assert base == "my-jazz-v2-" and time[8] == "-" and (time[:8] + time[9:]).isdigit()
    assert run_dir_leaf(cfg.run.name, time) == cfg.run.name
    assert run_dir_leaf("jazz", time) == f"jazz-{time}"

