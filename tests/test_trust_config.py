"""A run folder or recipe someone sends you runs no code: `sample`, `export`, `rerun`, a resume and a
`--config-path` rerun refuse an edited saved config (a `_target_` at the top or nested, an interpolation, a
resolver) in one line naming the key, and the attacker's function never runs (it would leave a marker file)."""

import shutil
import sys

import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from sidestep import export, rerun, sample, train
from sidestep.adapters.attach import adapter_config, add_adapter, save_adapter
from sidestep.config import as_container, resolve
from sidestep.config.saved import load_saved, saved_text
from sidestep.config.trust import ALLOW_ENV, check_target, take_allow_flags
from sidestep.errors import ConfigError
from sidestep.models.source import model_source
from sidestep.ui.app import run_app
from tests.attacker import MARKER_ENV
from tests.conftest import compose_cfg, randomize_lora

PAYLOAD = "tests.attacker.payload"
ATTACKS = {  # (key, YAML value) an attacker writes into a shared run's .hydra/config.yaml
    "top-level target": ("model._target_", PAYLOAD),
    "nested target": ("model.tiny_stack.vae._target_", PAYLOAD),
    "interpolation resolver": ("run.name", "${attacker:x}"),
    "resolver with a side effect": ("run.name", "${sidestep_record_dir:MARKER_DIR}"),
}


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory, cache_dir):
    """A genuine tiny run folder: saved config, what was typed, a finished adapter."""
    run = tmp_path_factory.mktemp("shared") / "run"
    cfg = resolve(compose_cfg(cache_dir, "run.name=shared", "trainer.max_steps=1"))
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(saved_text(as_container(cfg)))
    (run / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(
        ["experiment=demo", f"data.synthetic.cache_dir={cache_dir}", "trainer.max_steps=1", "ui.yes=true"]))
    dit = model_source(cfg.model).dit()
    add_adapter(dit.transformer, adapter_config(cfg), seed=0)
    save_adapter(randomize_lora(dit.transformer), run / "adapter", cfg.run.name, cfg.export.dtype)
    return run


@pytest.fixture
def attacked(shared_run, tmp_path, monkeypatch):
    """`attacked(name)`: a copy of the run with that attack written into its saved config; `.marker` must never
    appear."""
    marker = tmp_path / "marker"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    if not OmegaConf.has_resolver("attacker"):  # a resolver with a side effect, as any registered one might have
        OmegaConf.register_new_resolver("attacker", lambda _: __import__("tests.attacker").attacker.payload())

    def make(attack: str, file: str = "config.yaml"):
        run = tmp_path / "run"
        shutil.copytree(shared_run, run)
        key, value = ATTACKS[attack]
        value = value.replace("MARKER_DIR", str(tmp_path / "marker_dir"))
        path = run / ".hydra" / file
        if file == "config.yaml":
            saved = OmegaConf.load(path)
            OmegaConf.update(saved, key, value, force_add=True)
            path.write_text(OmegaConf.to_yaml(saved))
        else:
            path.write_text(OmegaConf.to_yaml([*OmegaConf.load(path), f"{key}={value}"]))
        return run, key

    make.ran = lambda: (tmp_path / "marker").exists() or (tmp_path / "marker_dir").exists()
    return make


def refused(capsys, call) -> str:
    """Run an entry point in this process; it must exit 2 with one line, which is returned."""
    GlobalHydra.instance().clear()
    with pytest.raises(SystemExit) as exit_:
        call()
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1, err
    return err


def hydra_app(monkeypatch, app, *args):
    monkeypatch.setattr(sys, "argv", ["sidestep", *args])
    return lambda: run_app(app) if app is train.main else app()


@pytest.mark.parametrize("attack", ATTACKS)
def test_sample_refuses_an_edited_run(attacked, attack, capsys, monkeypatch, tmp_path):
    run, key = attacked(attack)
    err = refused(capsys, hydra_app(monkeypatch, sample.main, f"source={run}", "prompt=x",
                                    f"hydra.run.dir={tmp_path / 'out'}"))
    assert key in err and not attacked.ran()


@pytest.mark.parametrize("attack", ATTACKS)
def test_export_refuses_an_edited_run(attacked, attack, capsys, tmp_path):
    run, key = attacked(attack)
    err = refused(capsys, lambda: export.main([str(run), "--merge", "--out", str(tmp_path / "out")]))
    assert key in err and not attacked.ran()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("file", ["config.yaml", "overrides.yaml"])
def test_rerun_refuses_an_edited_run(attacked, attack, file, capsys, tmp_path):
    run, key = attacked(attack, file)
    err = refused(capsys, lambda: rerun.main([str(run), f"hydra.run.dir={tmp_path / 'again'}"]))
    assert key in err and "conf/ has changed" not in err  # refused as an edited record, not as a drifted one
    assert not attacked.ran()


@pytest.mark.parametrize("attack", ATTACKS)
def test_resume_refuses_an_edited_run(attacked, attack, capsys, monkeypatch, cache_dir):
    run, key = attacked(attack)
    err = refused(capsys, hydra_app(monkeypatch, train.main, "experiment=demo", f"data.synthetic.cache_dir={cache_dir}",
                                    "ui.yes=true", f"hydra.run.dir={run}", "resume_from=latest"))
    assert key in err and not attacked.ran()


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_config_path_rerun_refuses_an_edited_run(attacked, attack, capsys, monkeypatch, tmp_path):
    run, key = attacked(attack)
    err = refused(capsys, hydra_app(monkeypatch, train.main, "--config-path", str(run / ".hydra"), "--config-name",
                                    "config", f"hydra.run.dir={tmp_path / 'again'}"))
    assert key in err and not attacked.ran()


RECIPES = {  # a shared experiment recipe: (the line the attacker adds, the key the refusal names)
    "nested target": ("model: {tiny_stack: {vae: {_target_: tests.attacker.payload}}}", "model.tiny_stack.vae._target_"),
    "Hydra callback": ("hydra: {callbacks: {x: {_target_: tests.attacker.payload}}}", "hydra.callbacks.x._target_"),
    "logging factory": ("hydra: {job_logging: {handlers: {x: {(): tests.attacker.payload}}}}",
                        "hydra.job_logging.handlers.x.()"),
    "launcher shell line": ("hydra: {launcher: {setup: [touch MARKER]}}", "hydra.launcher.setup.0"),
    "resolver": ("run: {name: '${attacker:x}'}", "run.name"),
    "environment": ("trainer: {device: '${oc.env:HOME}'}", "trainer.device"),
    "swept environment": ("hydra: {sweeper: {params: {+hydra.job.env_set.LD_PRELOAD: /tmp/x.so}}}",
                          "hydra.sweeper.params.+hydra.job.env_set.LD_PRELOAD"),
    "swept log file": ("hydra: {sweeper: {params: {hydra.job_logging.handlers.file.filename: /tmp/x}}}",
                       "hydra.sweeper.params.hydra.job_logging.handlers.file.filename"),
    "swept Hydra group": ("hydra: {sweeper: {params: {hydra/job_logging: disabled}}}",
                          "hydra.sweeper.params.hydra/job_logging"),
}


@pytest.mark.parametrize("attack", RECIPES)
def test_a_shared_recipe_is_refused_before_hydra_runs_it(attacked, attack, capsys, monkeypatch, tmp_path, cache_dir):
    line, key = RECIPES[attack]
    (tmp_path / "recipes" / "experiment").mkdir(parents=True)
    (tmp_path / "recipes" / "experiment" / "shared.yaml").write_text(
        f"# @package _global_\ndefaults:\n  - /experiment/demo\n{line}\n")
    err = refused(capsys, hydra_app(monkeypatch, train.main, "--config-dir", str(tmp_path / "recipes"),
                                    "experiment=shared", f"data.synthetic.cache_dir={cache_dir}", "ui.yes=true",
                                    f"hydra.run.dir={tmp_path / 'run'}"))
    assert f"shared.yaml: {key}:" in err and not attacked.ran() and not (tmp_path / "run").exists()


def test_a_foreign_target_is_built_only_when_allowed_for_the_command(monkeypatch):
    monkeypatch.setenv(ALLOW_ENV, "")
    with pytest.raises(ConfigError, match=f"model._target_: '{PAYLOAD}' is not a model Side-Step ships; .* "
                                          f"--allow-target {PAYLOAD}"):
        check_target("model._target_", PAYLOAD)
    assert take_allow_flags(["train", "--allow-target", PAYLOAD, "adapter.rank=4"]) == ["train", "adapter.rank=4"]
    check_target("model._target_", PAYLOAD)
    with pytest.raises(ConfigError, match="never builds anything nested"):  # allowed or not, never nested
        check_target("model.tiny_stack.vae._target_", PAYLOAD)


def test_an_untouched_run_passes_the_vetting(shared_run):
    """What `resolve_run` saves (with the app's run-dir pattern and its resolvers) and what was typed are data."""
    assert load_saved(shared_run / ".hydra" / "config.yaml").run.name == "shared"
    assert "experiment=demo" in rerun.saved_overrides(shared_run)
