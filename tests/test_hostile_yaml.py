"""A YAML file someone sends (a run's record, a recipe, a prompt list) is parsed only once it is known to be plain
data of a sane size: a `!!python/...` tag, an alias bomb, a record that is a link to another file or not a
mapping is refused in one line naming the file (exit 2), never a traceback or a hang."""

import pytest

from sidestep import export, train
from tests.test_trust_config import hydra_app, refused

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefg", "bcdefgh"))
RECORDS = {  # what the attacker puts at RUN/.hydra/config.yaml: (writer, what the refusal says)
    "python tag": (lambda p: p.write_text("run: !!python/object/apply:os.system [touch x]\n"), "is not plain data"),
    "alias bomb": (lambda p: p.write_text(BOMB), "anchors and aliases"),
    "link to another file": (lambda p: p.symlink_to("/etc/passwd"), "is a link"),
    "a list": (lambda p: p.write_text("- a\n"), "is a mapping of settings"),
    "not YAML": (lambda p: p.write_text("a: [\n"), "not valid YAML"),
    "not text": (lambda p: p.write_bytes(b"\xff\xfe\x00a"), "not valid YAML"),
}


@pytest.mark.parametrize("attack", RECORDS)
def test_a_hostile_record_is_refused_in_one_line(attack, tmp_path, capsys):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_config.json").write_text("{}")
    write, says = RECORDS[attack]
    write(run / ".hydra" / "config.yaml")
    err = refused(capsys, lambda: export.main([str(run), "--out", str(tmp_path / "out")]))
    assert f"{run / '.hydra' / 'config.yaml'}: " in err and says in err and "root:" not in err
    assert not (tmp_path / "out").exists()


def test_an_alias_bomb_in_a_recipe_is_refused_before_hydra_parses_it(tmp_path, capsys, monkeypatch):
    (tmp_path / "recipes" / "experiment").mkdir(parents=True)
    (tmp_path / "recipes" / "experiment" / "shared.yaml").write_text("# @package _global_\n" + BOMB)
    err = refused(capsys, hydra_app(monkeypatch, train.main, "--config-dir", str(tmp_path / "recipes"),
                                    "experiment=shared", f"hydra.run.dir={tmp_path / 'run'}"))
    assert "shared.yaml: expands to more than" in err and not (tmp_path / "run").exists()


def test_a_model_folder_s_python_is_never_trusted(monkeypatch):
    """A checkpoint folder is data: its text encoder's `auto_map` code must never run, nor be offered to run, and
    every helper's weights load from safetensors only (a `.bin` beside them is a pickle, never opened)."""
    from types import SimpleNamespace

    from sidestep.models import acestep
    calls = []
    loader = SimpleNamespace(from_pretrained=lambda path, **kw: calls.append(kw))
    monkeypatch.setattr(acestep, "AutoModel", loader)
    monkeypatch.setattr(acestep, "AutoTokenizer", loader)
    stub = SimpleNamespace(_text_encoder_folders=lambda: ("m", "t"))
    acestep.AceStepCheckpoint._text_encoder(stub, None)
    assert len(calls) == 2 and all(kw.get("trust_remote_code") is False for kw in calls)
    assert calls[0].get("use_safetensors") is True
    monkeypatch.setattr(acestep, "AutoencoderOobleck", loader)
    acestep.AceStepCheckpoint._vae(SimpleNamespace(_vae_folder=lambda: "v"), None)
    assert calls[-1].get("use_safetensors") is True


def test_readers_of_a_run_folder_skip_an_alias_bomb_instead_of_hanging(tmp_path, caplog):
    """The monitor, the report, the studio and a sweep's failure summary read a run someone sent: a record that is
    not plain data is skipped (said in the log), never parsed."""
    from sidestep.monitor import Reader
    from sidestep.report.runs import overrides_text
    from sidestep.studio.runs import snapshot
    from sidestep.sweep_outcome import _overrides

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
        (run / ".hydra" / name).write_text(BOMB)
    assert Reader(tmp_path).snapshot(run).config is None
    assert overrides_text(run) == "(defaults)" and _overrides(run) == "defaults"
    assert snapshot(run)["name"] == "run"
    assert "expands to more than" in caplog.text
