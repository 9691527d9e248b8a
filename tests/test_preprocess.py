"""Preprocessing turns a folder of songs into samples training reads: right shapes and labels, every bad file
named with its reason, nothing redone that is up to date, nothing lost when interrupted."""

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from sidestep.data.dataset import MANIFEST, LatentDataset
from sidestep.data.samples import read_sample, sample_shape
from sidestep.models.tiny import TinyModel, tiny_condition_encoder, write_checkpoints
from sidestep.preprocessing import run as preprocess_run
from sidestep.preprocessing.run import STAGING, preprocess
from sidestep.ui.file_progress import FileProgress
from tests.helpers.audio import SECONDS, header, settings, write_song


@pytest.fixture
def songs(tmp_path) -> Path:
    """A mono 44.1 kHz WAV with a song.txt, a stereo 48 kHz FLAC with a song.json, a mono MP3 with no label."""
    folder = tmp_path / "songs"
    folder.mkdir()
    write_song(folder / "pad.wav", 44_100, 1)
    (folder / "pad.txt").write_text("caption: warm sine pad\nbpm: 90\nkey: A minor\nlyrics:\n[Verse]\nla la\n")
    write_song(folder / "noise.flac", 48_000, 2, kind="noise")
    (folder / "noise.json").write_text(json.dumps({"caption": "white noise", "language": "en"}))
    write_song(folder / "hum_01.mp3", 44_100, 1)
    return folder


def run(cfg):
    return preprocess(cfg, cfg.model, partial(FileProgress, plain=True))


def test_songs_become_samples_of_the_right_shapes_with_their_labels(tmp_path, songs):
    cfg = settings(tmp_path, songs)
    outcome = run(cfg)
    assert sorted(outcome.processed) == ["hum_01", "noise", "pad"] and not outcome.failed
    out = Path(cfg.out_dir)
    assert json.loads((out / MANIFEST).read_text())["samples"] == ["hum_01.safetensors", "noise.safetensors",
                                                                   "pad.safetensors"]
    assert not (out / STAGING).exists()
    silence = tiny_condition_encoder(cfg.model).silence_latent[0]
    for name in ("hum_01", "noise", "pad"):
        sample = read_sample(out / f"{name}.safetensors")
        frames = int(SECONDS * 48_000) // 1920
        assert sample["target_latents"].shape == (frames, 64)
        assert torch.equal(sample["context_latents"][:, 64:], torch.ones(frames, 64))
        assert torch.allclose(sample["context_latents"][:, :64], silence[:frames])
        assert sample["encoder_hidden_states"].shape[1] == cfg.model.arch.encoder_hidden_size
        assert sample["encoder_attention_mask"].dtype == torch.bool and sample["encoder_attention_mask"].all()
    pad = header(out / "pad.safetensors")
    assert (pad["caption"], pad["lyrics"], pad["bpm"], pad["keyscale"]) == ("warm sine pad", "[Verse]\nla la", 90, "A minor")
    assert pad["duration"] == pytest.approx(SECONDS, abs=1e-3) and len(pad["source_hash"]) == 64
    hum = header(out / "hum_01.safetensors")
    assert (hum["caption"], hum["lyrics"]) == ("hum 01", "[Instrumental]")
    LatentDataset(out, sample_shape(cfg.model))  # the training reader takes every file


def test_a_second_run_skips_what_is_done_and_redoes_only_what_changed(tmp_path, songs):
    cfg = settings(tmp_path, songs)
    run(cfg)
    out = Path(cfg.out_dir)
    before = {p.name: p.read_bytes() for p in out.glob("*.safetensors")}
    again = run(cfg)
    assert again.processed == [] and sorted(again.skipped) == ["hum_01", "noise", "pad"]
    assert {p.name: p.read_bytes() for p in out.glob("*.safetensors")} == before  # deterministic, untouched

    (songs / "pad.txt").write_text("caption: cold sine pad\n")
    changed = run(cfg)
    assert changed.processed == ["pad"] and header(out / "pad.safetensors")["caption"] == "cold sine pad"
    assert sorted(run(settings(tmp_path, songs, "force=true")).processed) == ["hum_01", "noise", "pad"]


def test_bad_files_are_skipped_with_their_reason_and_the_rest_is_processed(tmp_path, songs):
    (songs / "corrupt.wav").write_bytes(b"RIFF" + bytes(200))
    (songs / "empty.flac").write_bytes(b"")
    (songs / "phone.m4a").write_bytes(b"\x00" * 64)
    (songs / "bought.m4p").write_bytes(b"\x00" * 64)
    write_song(songs / "quiet.wav", 48_000, 2, kind="sine")
    soundfile.write(songs / "quiet.wav", np.zeros((48_000, 2)), 48_000)
    write_song(songs / "click.wav", 48_000, 1, seconds=0.05)
    write_song(songs / "labelled.wav", 48_000, 1)
    (songs / "labelled.txt").write_text("bpm: fast\n")
    outcome = run(settings(tmp_path, songs))
    reasons = {f.path.name: f.reason for f in outcome.failed}
    assert set(reasons) == {"corrupt.wav", "empty.flac", "phone.m4a", "bought.m4p", "quiet.wav", "click.wav",
                            "labelled.wav"}
    assert "unreadable or corrupt" in reasons["phone.m4a"] and "copy-protected" in reasons["bought.m4p"]
    assert "silent" in reasons["quiet.wav"]
    assert "shorter than one latent patch" in reasons["click.wav"]
    assert "labelled.txt" in reasons["labelled.wav"] and "fast" in reasons["labelled.wav"]
    assert sorted(outcome.processed) == ["hum_01", "noise", "pad"]


def test_m4a_and_aac_songs_preprocess(tmp_path):
    from tests.helpers.audio import write_with_ffmpeg

    folder = tmp_path / "phone"
    folder.mkdir()
    write_with_ffmpeg(folder / "idea.m4a")
    write_with_ffmpeg(folder / "memo.aac", rate=48_000, channels=1)
    outcome = run(settings(tmp_path, folder))
    assert sorted(outcome.processed) == ["idea", "memo"] and not outcome.failed


def test_an_interrupted_run_loses_nothing_and_the_next_one_finishes_without_redoing_pass_one(tmp_path, songs,
                                                                                            monkeypatch):
    cfg = settings(tmp_path, songs)
    real = preprocess_run.encode_condition
    calls = []

    def crash_on_second(pipe, staged):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(pipe, staged)

    monkeypatch.setattr(preprocess_run, "encode_condition", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    out = Path(cfg.out_dir)
    assert [p.name for p in out.glob("*.safetensors")] == ["hum_01.safetensors"]  # one finished, none half-written
    assert len(list((out / STAGING).glob("*.safetensors"))) == 2
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]

    monkeypatch.setattr(preprocess_run, "encode_condition", real)
    monkeypatch.setattr(TinyModel, "_vae", lambda *a: pytest.fail("pass 1 ran again"))
    outcome = run(cfg)
    assert sorted(outcome.processed) == ["noise", "pad"] and outcome.skipped == ["hum_01"]


def test_a_checkpoints_folder_gives_the_same_samples_as_the_tiny_stack_it_was_written_from(tmp_path, songs, make_cfg):
    for extra in ("noise.flac", "hum_01.mp3"):
        (songs / extra).unlink()
    root = tmp_path / "checkpoints"
    write_checkpoints(make_cfg().model, root)
    tiny = settings(tmp_path, songs)
    run(tiny)
    real = settings(tmp_path, songs, "model=turbo", f"model.checkpoint_dir={root}", f"out_dir={tmp_path / 'real'}")
    run(real)
    a, b = read_sample(tmp_path / "out" / "pad.safetensors"), read_sample(tmp_path / "real" / "pad.safetensors")
    for key in ("target_latents", "encoder_hidden_states", "context_latents"):
        assert torch.allclose(a[key], b[key], atol=1e-5), key


def test_command_line_exits_non_zero_only_when_no_song_could_be_used(tmp_path, cli):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "broken.wav").write_bytes(b"not audio")
    result = cli(f"audio_dir={folder}", f"out_dir={tmp_path / 'out'}", "model=tiny", app="preprocess")
    assert result.returncode == 2
    assert "broken.wav" in result.stdout and "no song could be preprocessed" in result.stderr
    (log,) = (tmp_path / "out" / ".preprocess").glob("*/preprocess.log")  # what the console said, the table too
    text = log.read_text()
    assert f"failed: {folder / 'broken.wav'}: " in text and text.strip().endswith(result.stderr.strip())


def test_training_preprocesses_songs_first_and_trains_on_them(tmp_path, songs, cli):
    run_dir = tmp_path / "run"
    result = cli("experiment=demo", "data=tensors", f"preprocess.audio_dir={songs}", "trainer.max_steps=3",
                 "sample.every_n_epochs=null", "ui.yes=true", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (run_dir / "dataset").glob("*.safetensors")) == [
        "hum_01.safetensors", "noise.safetensors", "pad.safetensors"]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert "3 samples" in result.stdout
