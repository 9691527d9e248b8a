"""`lora.*` became `adapter.*` and `training=` became `timesteps=`: the old spellings keep working with one note,
in a typed override, a sweep, a recipe the user wrote and the record of a run from before."""

import sys
from pathlib import Path

import pytest
import sidestep.conf
from omegaconf import OmegaConf

from sidestep.config import as_container, renamed_keys, settled_config
from sidestep.config.overrides import check_overrides
from sidestep.config.saved import load_saved, saved_text
from sidestep.report_pages.runs import read_run
from sidestep.rerun import drift, saved_overrides
from sidestep.training.fingerprint import mismatches, settings
from sidestep.ui.monitor_view import setup_text
from tests.helpers.configs import compose_cfg

CONF = Path(sidestep.conf.__file__).parent


@pytest.fixture(autouse=True)
def fresh_notes(monkeypatch):
    monkeypatch.setattr(renamed_keys, "_noticed", set())
LORA_KNOBS = frozenset(("target_modules", "rank", "alpha", "alpha_ratio", "dropout", "bias", "rank_map"))  # lora.* once


def notes(capsys) -> list:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]


def test_an_old_override_is_renamed_with_one_note_per_key(capsys):
    args = ["experiment=demo", "lora.rank=16", "+lora.bias=all", "~lora.dropout", "training=vanilla",
            "training.cfg_ratio=0", "lora.rank=8", "--config-dir", "training"]
    assert renamed_keys.renamed_overrides(args) == [
        "experiment=demo", "adapter.rank=16", "+adapter.bias=all", "~adapter.dropout", "timesteps=vanilla",
        "timesteps.cfg_ratio=0", "adapter.rank=8", "--config-dir", "training"]
    assert notes(capsys) == ["note: lora.rank is now adapter.rank", "note: lora.bias is now adapter.bias",
                             "note: lora.dropout is now adapter.dropout", "note: training= is now timesteps=",
                             "note: training.cfg_ratio is now timesteps.cfg_ratio"]


def test_a_sweep_and_a_search_space_in_old_names_are_renamed(capsys):
    args = ["-m", "lora.rank=16,64", "hydra.sweeper.params.lora.alpha_ratio=choice(1.0,2.0)"]
    assert renamed_keys.renamed_overrides(args) == [
        "-m", "adapter.rank=16,64", "hydra.sweeper.params.adapter.alpha_ratio=choice(1.0,2.0)"]
    check_overrides(args, CONF)  # old names pass the schema check (as today's)
    assert len(notes(capsys)) == 2


def test_train_takes_old_overrides_with_a_note(monkeypatch, capsys):
    from sidestep.train import main
    from sidestep.ui.app import run_app

    monkeypatch.setattr(sys, "argv", ["train", "experiment=demo", "lora.rank=16", "training=vanilla", "--cfg", "job"])
    run_app(main, check_schema=True)
    out = capsys.readouterr()
    cfg = OmegaConf.create(out.out)
    assert (cfg.adapter.rank, cfg.timesteps.mode) == (16, "vanilla") and "lora" not in cfg and "training" not in cfg
    assert out.err.splitlines() == ["note: lora.rank is now adapter.rank", "note: training= is now timesteps="]


def test_a_knob_on_a_type_without_it_is_one_line_naming_it(monkeypatch, capsys):
    from sidestep.train import main
    from sidestep.ui.app import run_app

    monkeypatch.setattr(sys, "argv", ["train", "experiment=demo", "adapter=oft", "lora.rank=16"])
    with pytest.raises(SystemExit) as ended:
        run_app(main, check_schema=True)
    assert ended.value.code != 0
    assert capsys.readouterr().err.splitlines() == [
        "note: lora.rank is now adapter.rank",
        "error: adapter.rank: adapter=oft has no rank; its knobs are adapter.target_modules, adapter.block_size, "
        "adapter.module_dropout, adapter.use_cayley_neumann"]


def test_a_preset_rank_leaves_a_type_without_one_alone(cache_dir):
    """experiment=demo sets adapter.rank 16; with adapter=oft the knob does not exist and is left out."""
    cfg = compose_cfg(cache_dir, "adapter=oft")
    assert "rank" not in cfg.adapter and "dropout" not in cfg.adapter and cfg.adapter.block_size == 32


def test_a_user_recipe_with_a_lora_section_still_composes(cache_dir, capsys):
    from sidestep.user_config import user_config_dir

    recipes = user_config_dir() / "experiment"
    recipes.mkdir(parents=True, exist_ok=True)
    (recipes / "old_style.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: tiny\n  - override /data: synthetic\n"
        "  - override /training: vanilla\nlora:\n  rank: 8\n  alpha: ${lora.rank}\n  dropout: 0.0\n"
        "training:\n  cfg_ratio: 0.05\n")
    try:
        cfg = compose_cfg(cache_dir, f"data.synthetic.cache_dir={cache_dir}", experiment="old_style")
    finally:
        (recipes / "old_style.yaml").unlink()
    assert (cfg.adapter.rank, cfg.adapter.alpha, cfg.adapter.dropout) == (8, 8, 0.0)
    assert (cfg.timesteps.mode, cfg.timesteps.cfg_ratio) == ("vanilla", 0.05)
    lines = notes(capsys)
    assert "note: lora.rank is now adapter.rank (" in lines[0] and "old_style.yaml)" in lines[0]
    assert any(line.startswith("note: training= is now timesteps=") for line in lines)


def old_run(tmp_path: Path, cache_dir: Path) -> Path:
    """A run folder as Side-Step wrote it before the rename: `lora:` and `training:` in its config, `lora.rank=4`
    and `training=vanilla` in its overrides."""
    overrides = ["experiment=demo", "ui.yes=true", f"data.synthetic.cache_dir={cache_dir}", "adapter.rank=4",
                 "timesteps=vanilla"]
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        cfg = as_container(settled_config(compose(config_name="train", overrides=overrides))[0])
    cfg["lora"] = {k: cfg["adapter"].pop(k) for k in list(cfg["adapter"]) if k in LORA_KNOBS}
    cfg["training"] = cfg.pop("timesteps")
    cfg["scheduler"]["_target_"] = "sidestep.training.lr_schedules.cosine"  # a function then
    cfg["data"]["_target_"] = "sidestep.data.sources.SyntheticSamples"  # a class beside its schema then
    record = tmp_path / "run" / ".hydra"
    record.mkdir(parents=True)
    (record / "config.yaml").write_text(saved_text(cfg))
    old = [o.replace("adapter.", "lora.").replace("timesteps=", "training=") for o in overrides]
    (record / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(old)))
    return tmp_path / "run"


def test_an_old_run_is_read_rerun_and_reported_in_todays_names(tmp_path, cache_dir, capsys):
    run = old_run(tmp_path, cache_dir)
    saved = load_saved(run / ".hydra" / "config.yaml")
    assert saved.adapter.rank == 4 and saved.timesteps.mode == "vanilla" and "lora" not in saved
    assert saved.scheduler._target_ == "sidestep.training.lr_schedules.Cosine"
    assert saved.data._target_ == "sidestep.config.data_sources.SyntheticSamples"
    overrides = saved_overrides(run)
    assert "adapter.rank=4" in overrides and "timesteps=vanilla" in overrides
    assert drift(run, overrides) == {}  # today's conf/ recomposes exactly what it ran
    info = read_run(run, tmp_path)
    assert "LoRA rank 4 / alpha 8" in setup_text(info.config)
    assert notes(capsys) == []  # a record is translated quietly


def test_an_old_checkpoints_fingerprint_matches_the_same_setup(cache_dir):
    cfg = compose_cfg(cache_dir, "adapter.rank=4")
    now = settings(cfg)
    old = {k: v for k, v in now.items() if k not in ("adapter", "timesteps")}
    old["training"] = now["timesteps"]
    old["adapter"] = {k: v for k, v in now["adapter"].items() if k not in LORA_KNOBS}
    old.update({f"lora.{k}": v for k, v in now["adapter"].items() if k in LORA_KNOBS})
    assert mismatches(old, now) == []
    old["lora.rank"] = 8
    assert mismatches(old, now) == ["adapter.rank: checkpoint has 8, this run has 4"]
