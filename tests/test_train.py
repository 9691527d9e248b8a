"""End to end on the tiny model: the loss falls, runs are reproducible, and the CLI writes a complete run dir."""

import re

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from sidestep.config.saved import load_saved
from sidestep.models.source import model_source
from sidestep.train import train_adapter
from tests.helpers.options import options


def test_loss_falls_on_learnable_data_and_the_adapter_reproduces_the_trained_model(make_cfg, tmp_path):
    cfg = make_cfg("trainer.max_steps=120")
    result = train_adapter(cfg, tmp_path)
    assert result.steps == 120
    assert result.final_loss < 0.85 * result.first_loss, (result.first_loss, result.final_loss)

    # The saved adapter on a freshly built base gives the trained model's predictions.
    weights = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert weights and all(".lora_" in k for k in weights)
    fresh = model_source(cfg.model).dit().transformer.eval()
    gen = torch.Generator().manual_seed(0)
    x, enc, ctx = torch.randn(1, 20, 64, generator=gen), torch.randn(1, 16, 64, generator=gen), torch.randn(1, 20, 128)
    t = torch.tensor([0.5])
    kwargs = dict(hidden_states=x, timestep=t, timestep_r=t, encoder_hidden_states=enc, context_latents=ctx, return_dict=False)
    with torch.no_grad():
        base = fresh(**kwargs)[0]
        fresh.load_lora_adapter(tmp_path / "adapter", weight_name="adapter_model.safetensors", prefix=None)
        adapted = fresh(**kwargs)[0]
    assert not torch.allclose(base, adapted, atol=1e-4)
    # The same weights through PEFT's own layer math give the same output.
    from peft import set_peft_model_state_dict

    from sidestep.adapters.attach import adapter_config, add_adapter

    peft_model = model_source(cfg.model).dit().transformer
    add_adapter(peft_model, adapter_config(cfg), seed=123)
    set_peft_model_state_dict(peft_model, weights)
    with torch.no_grad():
        assert torch.allclose(peft_model.eval()(**kwargs)[0], adapted, atol=1e-6)


def test_two_identical_runs_give_identical_adapters(make_cfg, tmp_path):
    cfg = make_cfg("trainer.max_steps=15", "trainer.gradient_accumulation=2", "adapter.dropout=0.1")
    for name in ("a", "b"):
        train_adapter(cfg, tmp_path / name)
    a = load_file(tmp_path / "a" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    train_adapter(make_cfg("trainer.max_steps=15", "trainer.gradient_accumulation=2", "adapter.dropout=0.1", "trainer.seed=7"),
        tmp_path / "c")
    c = load_file(tmp_path / "c" / "adapter" / "adapter_model.safetensors")
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_accumulation_and_max_steps_count_optimizer_steps(make_cfg, tmp_path):
    # 8 samples, batch 2 -> 4 batches per epoch; accumulation 3 -> 2 optimizer steps per epoch (the last is partial).
    result = train_adapter(make_cfg("trainer.batch_size=2", "trainer.gradient_accumulation=3", "trainer.epochs=3"), tmp_path / "a")
    assert result.steps == 6
    result = train_adapter(make_cfg("trainer.batch_size=2", "trainer.gradient_accumulation=3", "trainer.max_steps=3"), tmp_path / "b")
    assert result.steps == 3


@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_every_optimizer_trains(make_cfg, tmp_path, optimizer):
    lr = f"optimizer.lr={make_cfg(f'optimizer={optimizer}', experiment=None, check=False).optimizer.lr}"  # its own
    result = train_adapter(make_cfg(f"optimizer={optimizer}", lr, "trainer.max_steps=4", "timesteps=vanilla"), tmp_path)
    assert result.steps == 4 and torch.isfinite(torch.tensor(result.final_loss))


def test_cli_demo_writes_a_complete_run_dir(cli, tmp_path, cache_dir):
    proc = cli("experiment=demo", "trainer.max_steps=12", "trainer.save_every_steps=6", "ui.yes=true",
               f"data.synthetic.cache_dir={cache_dir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = (tmp_path / "outputs").glob("*/*")  # outputs/<date>/<run.name>, the name: demo-<start time>
    assert re.fullmatch(r"demo-\d{8}-\d{6}", run.name) and f"name: {run.name}" in (run / ".hydra" / "config.yaml").read_text()
    assert (run / "adapter" / "comfyui" / f"{run.name}.safetensors").is_file()
    assert (run / "adapter" / "acestep" / run.name / "adapter_config.json").is_file()
    unreadable = [p for p in run.rglob("*") if not p.stat().st_mode & 0o004]
    assert not unreadable, unreadable  # checkpoints and adapter included: a shared ComfyUI server reads them
    for path in (".hydra/config.yaml", ".hydra/overrides.yaml", "adapter/adapter_config.json",
                 "adapter/adapter_model.safetensors", "train.log"):
        assert (run / path).stat().st_size > 0, path
    assert list((run / "tb").rglob("*tfevents*"))
    saved = OmegaConf.to_yaml(load_saved(run / ".hydra" / "config.yaml"))  # the values, without Hydra's settings
    assert f"cache_dir: {cache_dir}" in saved and "${" not in saved

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={"histograms": 0}).Reload()
    assert {"loss/smoothed", "loss/step", "lr", "grad_norm/total"} <= set(events.Tags()["scalars"])
    assert "timesteps" in events.Tags()["histograms"]
    assert [e.step for e in events.Scalars("loss/smoothed")] == [10, 12]


@pytest.mark.parametrize("args, message", [
    (["optimizer.lr=-1"], "error: optimizer.lr: must be > 0"),
    (["adapter.dropout=0.9"], "error: adapter.dropout: must be between 0 and 0.5"),
    (["model=turbo", "data=tensors", "data.dataset_dir=."], "error: model.checkpoint_dir: is not set"),
    (["data.dataset_dir=."], "error: data.dataset_dir: data=synthetic has no dataset_dir; its knobs are"),
    (["optimizer.learning_rate=1e-4"], "error: optimizer.learning_rate: no such option (did you mean optimizer.lr?)"),
    (["adapter.rank=[4"], "error: adapter.rank=[4: cannot parse this override (no viable alternative at input '[4')"),
])
def test_cli_bad_input_is_one_line_and_a_nonzero_exit(cli, args, message):
    proc = cli("experiment=demo", "ui.yes=true", *args)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip().splitlines()[0]]
    assert proc.stderr.startswith(message), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_cli_bad_sample_file_stops_before_the_model_is_built(cli, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    torch.save({"target_latents": torch.randn(10, 64)}, data / "song.pt")
    proc = cli("model=tiny", "adapter.rank=16", f"data.dataset_dir={data}", "ui.yes=true", "trainer.device=cpu")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {data / 'song.pt'}: missing attention_mask, encoder_hidden_states, " \
                                  "encoder_attention_mask, context_latents; is this a preprocessed Side-Step/ACE-Step sample?"
    assert not (tmp_path / "outputs").exists()  # a refused first start leaves no run folder behind
