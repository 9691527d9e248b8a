"""Hearing the adapter: `sidestep.sample` renders 48 kHz stereo WAVs with and without it, deterministically, and
sampling during training never changes what is trained."""

import json
import logging
import shutil
import subprocess
import sys
import wave

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sidestep.digest import file_hash
from sidestep.errors import ConfigError
from sidestep.models.source import model_source
from sidestep.models.tiny import write_checkpoints
from sidestep.sampling.prompts import from_file
from sidestep.sampling.spectrogram import mel_image
from sidestep.train import train_adapter
from sidestep.training.adapter_sources import open_source, samples_dir


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A finished `experiment=demo` run with a few checkpoints."""
    run = tmp_path_factory.mktemp("demo") / "run"
    cache = tmp_path_factory.mktemp("cache")
    subprocess.run([sys.executable, "-m", "sidestep.train", "experiment=demo", "trainer.max_steps=12",
                    "trainer.save_every_steps=6", "sample.every_n_epochs=null", f"data.synthetic.cache_dir={cache}",
                    "ui.yes=true", f"hydra.run.dir={run}"], check=True, capture_output=True)
    return run


def read_wav(path):
    with wave.open(str(path)) as f:
        frames = np.frombuffer(f.readframes(f.getnframes()), dtype=np.int16)
        return f.getframerate(), f.getnchannels(), frames


def test_compare_writes_the_same_seed_with_and_without_the_adapter(demo_run, tmp_path):
    out = tmp_path / "samples"
    result = subprocess.run([sys.executable, "-m", "sidestep.sample", str(demo_run), "prompt=warm lofi piano",
                             "duration=2", "seed=7", "compare=true", "compare_strengths=[0.5]", f"hydra.run.dir={out}"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    names = sorted(p.name for p in out.glob("*.wav"))
    assert names == ["0_warm_lofi_piano_strength0p5.wav", "0_warm_lofi_piano_with.wav", "0_warm_lofi_piano_without.wav"]
    rate, channels, frames = read_wav(out / "0_warm_lofi_piano_with.wav")
    assert (rate, channels, len(frames) // channels) == (48_000, 2, 96_000)
    half, with_, without = (read_wav(out / name)[2] for name in names)
    assert not np.array_equal(with_, without) and not np.array_equal(half, with_) and not np.array_equal(half, without)
    details = json.loads((out / "0_warm_lofi_piano_with.json").read_text())
    assert details["adapter_sha256"] == file_hash(demo_run / "adapter" / "adapter_model.safetensors")
    assert (details["seed"], details["steps"], details["strength"], details["model"]) == (7, 8, 1.0, "tiny")
    assert "adapter" not in json.loads((out / "0_warm_lofi_piano_without.json").read_text())


def test_same_seed_same_audio_other_seed_other_audio(demo_run):
    from sidestep.config.schema import SamplePrompt
    from sidestep.models.source import model_source
    from sidestep.sampling.render import RenderSettings, build_pipeline, render

    source = open_source(demo_run)
    model = model_source(source.run_cfg.model)
    transformer = model.dit().transformer
    transformer.add_adapter(source.adapter_config)
    pipe = build_pipeline(model, transformer.eval(), torch.float32)
    pipe.set_progress_bar_config(disable=True)
    prompt = SamplePrompt("warm lofi piano")
    first = render(pipe, prompt, RenderSettings(1.0, 7, 4, 3.0, 3.0))
    assert first.shape == (2, 48_000)
    assert torch.equal(first, render(pipe, prompt, RenderSettings(1.0, 7, 4, 3.0, 3.0)))
    assert not torch.equal(first, render(pipe, prompt, RenderSettings(1.0, 8, 4, 3.0, 3.0)))


def test_a_checkpoint_is_a_source_and_holds_the_adapter_of_its_step(demo_run):
    final = open_source(demo_run / "checkpoints" / "step-0000012")
    adapter = open_source(demo_run / "adapter")
    assert final.run_dir == adapter.run_dir == demo_run
    assert final.weights.keys() == adapter.weights.keys()
    assert all(torch.equal(final.weights[k], adapter.weights[k]) for k in final.weights)
    assert final.adapter_config.r == adapter.adapter_config.r
    with pytest.raises(ConfigError, match="no adapter"):
        open_source(demo_run / "tb")
    assert samples_dir(str(demo_run / "adapter")) == str(demo_run / "samples")
    assert samples_dir(str(demo_run / "missing")) == "outputs/samples"  # nothing created in a wrong path


def test_sampling_during_training_leaves_the_adapter_bit_identical_and_fills_tensorboard(make_cfg, tmp_path):
    base = ("trainer.max_steps=8", "adapter.dropout=0.1")
    train_adapter(make_cfg(*base), tmp_path / "quiet")
    train_adapter(make_cfg(*base, "sample.every_n_steps=4", "sample.duration=1"), tmp_path / "listening")
    a = load_file(tmp_path / "quiet" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "listening" / "adapter" / "adapter_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    folders = sorted(p.name for p in (tmp_path / "listening" / "samples").iterdir())
    assert folders == ["step-0000004", "step-0000008"]
    assert len(list((tmp_path / "listening" / "samples" / "step-0000004").glob("*.wav"))) == 2
    events = EventAccumulator(str(next((tmp_path / "listening").rglob("*tfevents*")).parent), size_guidance={"audio": 0})
    events.Reload()
    assert len(events.Tags()["audio"]) == 2 and len(events.Tags()["images"]) == 2


def test_a_missing_vae_folder_is_one_clear_warning_and_training_finishes(make_cfg, tmp_path, caplog):
    root = tmp_path / "checkpoints"
    write_checkpoints(make_cfg().model, root)
    shutil.rmtree(root / "vae")
    cfg = make_cfg("model=turbo", f"model.checkpoint_dir={root}", "trainer.max_steps=4", "sample.every_n_steps=2",
                   "sample.duration=1")

    model_source(cfg.model).settle(cfg.model)
    with caplog.at_level(logging.WARNING):
        result = train_adapter(cfg, tmp_path / "run")
    assert result.steps == 4 and (tmp_path / "run" / "adapter").is_dir()
    failures = [r.getMessage() for r in caplog.records if "samples at step" in r.getMessage()]
    assert len(failures) == 1 and "no vae/ folder" in failures[0]  # said once, then sampling stops trying


def test_a_prompts_file_is_checked_field_by_field(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("- {prompt: warm lofi piano, bpm: 80}\n- prompt: dark techno\n  lyrics: '[Verse] go'\n")
    prompts = from_file(good)
    assert [(p.prompt, p.bpm, p.lyrics) for p in prompts] == [("warm lofi piano", 80, "[Instrumental]"),
                                                              ("dark techno", None, "[Verse] go")]
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {prompt: x, bpm: fast}\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        from_file(bad)


def test_the_spectrogram_puts_a_tone_at_its_frequency():
    t = torch.arange(48_000) / 48_000
    low, high = (mel_image(torch.sin(2 * torch.pi * f * t).expand(2, -1), 48_000) for f in (200.0, 4000.0))
    assert low.shape == (128, 94, 3) and low.dtype == np.uint8
    brightest = lambda image: int(image.sum(axis=(1, 2)).argmax())  # noqa: E731  (row 0 is the top)
    assert brightest(high) < brightest(low)


def test_the_runs_model_is_used_with_what_the_command_line_changes():
    from omegaconf import OmegaConf

    from sidestep.training.adapter_samples import _model

    run_cfg = OmegaConf.create({"model": {"variant": "base", "checkpoint_dir": "/old/checkpoints"}})
    cfg = OmegaConf.create({"model": {"variant": "turbo", "checkpoint_dir": "/new/checkpoints"}})
    model = _model(cfg, run_cfg, ["prompt=x", "model.checkpoint_dir=/new/checkpoints"])
    assert (model.variant, model.checkpoint_dir) == ("base", "/new/checkpoints")
    assert _model(cfg, run_cfg, ["model=turbo", "model.checkpoint_dir=/new/checkpoints"]).variant == "turbo"
    assert _model(cfg, None, []).variant == "turbo"
