"""Keep what is best: the EMA follows its formula and resumes exactly, the checkpoint with the lowest held-out loss
outlives pruning and is what `best` names, early stopping ends the run at exactly its patience, and evaluations
come when the cadence says."""

import json
import re

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from sidestep.config import as_container
from sidestep.errors import ConfigError
from sidestep.monitor import main as monitor
from sidestep.run_status import read_status
from sidestep.train import train_adapter
from sidestep.training import checkpoint as ckpt
from sidestep.training.adapter_export import export_adapter
from sidestep.training.best_checkpoint import best_of
from sidestep.training.ema import EMA_FILE, decay_at
from sidestep.training.validation import HeldOutLoss

# 8 samples, batch 2: 4 optimizer steps per epoch; 6 training samples and 3 steps with a quarter held out
SHORT = ("trainer.batch_size=2", "trainer.gradient_accumulation=1", "data.crop_seconds=2", "adapter.dropout=0.1")
EMA = ("trainer.ema.decay=0.3",)  # low, so six steps go through the warm-up and past it
HELD_OUT = ("data.val_fraction=0.25", "trainer.eval_every_steps=1")


def train(cfg, run_dir):
    """Train as `sidestep.train` does, with the run's saved config that `sample` and `export` read."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(as_container(cfg)))
    return train_adapter(cfg, run_dir)


def tensors(path):
    return load_file(path)


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture
def scripted_losses(monkeypatch):
    """The held-out loss each evaluation returns, in order; the steps it was asked at are recorded in `asked`."""
    script = {"losses": [], "asked": 0}

    def fake(self, transformer):
        script["asked"] += 1
        return script["losses"].pop(0)

    monkeypatch.setattr(HeldOutLoss, "__call__", fake)
    return script


def test_ema_follows_its_formula_step_by_step(make_cfg, tmp_path):
    train(make_cfg(*SHORT, *EMA, "trainer.max_steps=6", "trainer.save_every_steps=1", "trainer.keep_checkpoints=100"),
          tmp_path)
    folder = tmp_path / "checkpoints"
    raw = {n: tensors(folder / f"step-{n:07d}" / ckpt.LORA_FILE) for n in range(1, 7)}
    ema = {n: tensors(folder / f"step-{n:07d}" / EMA_FILE) for n in range(1, 7)}
    for n in range(2, 7):  # update n-1 (counted from 0) made checkpoint n
        d = min(0.3, n / (9 + n))  # the warm-up written out: (1 + u) / (10 + u) for update u = n - 1, capped
        assert d == pytest.approx(decay_at(0.3, n - 1))
        for key, value in ema[n].items():
            expected = d * ema[n - 1][key].double() + (1 - d) * raw[n][key].double()
            torch.testing.assert_close(value.double(), expected, rtol=1e-6, atol=1e-7)
    assert any(not torch.equal(ema[6][k], raw[6][k]) for k in raw[6])  # an average, not a copy
    assert_same(ema[6], tensors(tmp_path / "adapter" / "adapter_model.safetensors"))  # the adapter is the EMA
    assert "EMA" in json.loads((tmp_path / "adapter" / "formats.json").read_text())["diffusers"]["weights"]
    export_adapter(tmp_path, ["diffusers"], None, None, None, False, raw=True)  # the training weights, on request
    assert_same(raw[6], tensors(tmp_path / "adapters" / "step-0000006-raw" / "adapter_model.safetensors"))


def test_an_interrupted_run_with_ema_resumes_to_the_same_raw_and_ema_weights(make_cfg, tmp_path):
    run = (*SHORT, *EMA, "trainer.max_steps=6")
    train_adapter(make_cfg(*run, "trainer.save_every_steps=2"), tmp_path / "full")
    cut = tmp_path / "full" / "checkpoints" / "step-0000002"
    train_adapter(make_cfg(*run, f"resume_from={cut}"), tmp_path / "cut")
    end = lambda r, name: tensors(r / "checkpoints" / "step-0000006" / name)  # noqa: E731
    for name in (ckpt.LORA_FILE, EMA_FILE):
        assert_same(end(tmp_path / "full", name), end(tmp_path / "cut", name))
    assert_same(tensors(tmp_path / "full" / "adapter" / "adapter_model.safetensors"),
                tensors(tmp_path / "cut" / "adapter" / "adapter_model.safetensors"))


def test_the_best_checkpoint_survives_pruning_and_is_the_lowest_held_out_loss(make_cfg, tmp_path, scripted_losses,
                                                                              capsys):
    scripted_losses["losses"] = [3.0, 1.0, 2.0, 2.5, 1.5, 2.8]  # the best is step 2; step 5 is second best
    result = train(make_cfg(*SHORT, *HELD_OUT, "trainer.max_steps=6", "trainer.keep_checkpoints=1"), tmp_path)
    kept = [c.name for c in ckpt.complete_checkpoints(tmp_path)]
    assert kept == ["step-0000002", "step-0000006"]
    assert best_of(ckpt.complete_checkpoints(tmp_path)).name == "step-0000002"
    assert ckpt.checkpoint_path("best", tmp_path).name == "step-0000002"
    assert result.best_val_loss == 1.0 and result.val_loss == 2.8
    assert (result.objective(early_stop=True), result.objective(early_stop=False)) == (1.0, 2.8)  # Optuna's value
    status = read_status(tmp_path)
    assert (status["best_step"], status["best_val_loss"], status["state"]) == (2, 1.0, "finished")
    shown = re.sub(r"[\s│]+", " ", capsys.readouterr().out)  # the setup table, its wrapped cells joined
    assert "2 held-out samples x 6 evaluations x 5 timesteps" in shown  # the setup's cost row
    export_adapter(tmp_path, ["diffusers"], None, None, None, False, which="best")
    assert_same(tensors(tmp_path / "adapters" / "step-0000002" / "adapter_model.safetensors"),
                tensors(tmp_path / "checkpoints" / "step-0000002" / ckpt.LORA_FILE))
    assert "step-0000002</code> ★ best" in (tmp_path / "report.html").read_text()
    assert_same(tensors(tmp_path / "adapters" / "best" / "adapter_model.safetensors"),  # the best keeps an adapter
                tensors(tmp_path / "adapters" / "step-0000002" / "adapter_model.safetensors"))
    monitor([str(tmp_path), "--once"])
    assert re.search(r"best\s+step 2, held-out loss 1\.0000", capsys.readouterr().out)


def test_early_stopping_ends_at_exactly_the_patience(make_cfg, tmp_path, scripted_losses):
    # improvements must be 0.1 below the best: 3.95, 3.9 and 3.85 are new bests but not improvements
    scripted_losses["losses"] = [5.0, 4.0, 3.95, 3.9, 3.85, 1.0, 1.0]
    result = train(make_cfg(*SHORT, *HELD_OUT, "trainer.max_steps=7", "trainer.early_stop.patience=3",
                            "trainer.early_stop.min_delta=0.1"), tmp_path)
    assert scripted_losses["asked"] == 5 and result.steps == 5
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert ckpt.complete_checkpoints(tmp_path)[-1].name == "step-0000005"
    status = read_status(tmp_path)
    assert status["state"] == "finished" and status["stop_reason"].startswith("early stop: 3 evaluations")
    assert status["best_step"] == 5 and result.stop_reason == status["stop_reason"]
    assert "early stop: 3 evaluations" in (tmp_path / "report.html").read_text()


def test_held_out_loss_is_scored_every_epoch_when_asked(make_cfg, tmp_path, scripted_losses):
    scripted_losses["losses"] = [3.0, 2.0, 1.0, 0.5]
    train_adapter(make_cfg(*SHORT, "data.val_fraction=0.25", "trainer.eval_every_epochs=1", "trainer.max_steps=8"),
                  tmp_path)
    assert scripted_losses["asked"] == 3  # the ends of epochs 1 and 2 (steps 3, 6), and the last step (8)
    assert [c.name for c in ckpt.complete_checkpoints(tmp_path)] == ["step-0000003", "step-0000006", "step-0000008"]


def test_best_without_a_held_out_set_says_what_it_needs(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"^resume_from: best needs a held-out set \(data.val_fraction > 0\)"):
        make_cfg("resume_from=best")
    with pytest.raises(ConfigError, match=r"^trainer.early_stop.patience: needs a held-out set"):
        make_cfg("trainer.early_stop.patience=2")
    train(make_cfg(*SHORT, "trainer.max_steps=2"), tmp_path)
    with pytest.raises(ConfigError, match=r"^--from=best: .* needs a held-out set \(data.val_fraction > 0\)"):
        export_adapter(tmp_path, ["diffusers"], None, None, None, False, which="best")
    assert not (tmp_path / "checkpoints" / "step-0000002" / EMA_FILE).exists()  # off by default


@pytest.mark.parametrize("option, message", [
    ("trainer.ema.decay=1.0", "trainer.ema.decay: must be in (0, 1)"),
    ("trainer.eval_every_steps=0", "trainer.eval_every_steps: must be at least 1"),
    ("trainer.eval_every_epochs=0", "trainer.eval_every_epochs: must be at least 1"),
    ("trainer.early_stop.min_delta=-1", "trainer.early_stop.min_delta: must be >= 0"),
])
def test_each_new_setting_is_checked_in_one_line(make_cfg, option, message):
    with pytest.raises(ConfigError) as err:
        make_cfg(option, "data.val_fraction=0.25")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
