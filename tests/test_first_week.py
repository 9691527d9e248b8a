"""What a new user trips on in the first week: the tiny checkpoints command says what it costs, and samples made
after training play at the length of the training samples they are heard beside."""

from pathlib import Path

from hydra import compose, initialize_config_module

from sidestep.report_pages.listening import Sample, prompt_rows


def test_the_tiny_command_says_how_long_it_takes_before_loading_torch(monkeypatch, tmp_path, capsys):
    import sidestep.models.tiny
    from sidestep.tiny import main

    said = []
    monkeypatch.setattr(sidestep.models.tiny, "write_checkpoints",
                        lambda cfg, out, variant: said.append(capsys.readouterr().out) or out / f"acestep-v15-{variant}")
    main([str(tmp_path / "tiny"), "--variant", "base"])
    assert "a minute" in said[0] and str(tmp_path / "tiny") in said[0]  # before the slow part, not after it


def test_sample_renders_as_long_as_the_runs_songs_by_default(make_cfg):
    from sidestep.training.adapter_samples import run_duration

    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        assert compose(config_name="sample").duration is None
    run_cfg = make_cfg()  # the demo: 4 s songs
    assert run_duration(run_cfg) == 4.0
    run_cfg.sample.duration = 6.0  # what the run's own samples rendered
    assert run_duration(run_cfg) == 6.0
    assert run_duration(None) == 30.0  # outside a run


def test_a_report_row_never_puts_a_baseline_of_another_length_beside_the_checkpoints():
    def sample(name, **info):
        return Sample(Path(name), {"prompt": "jazz", "lyrics": "", "seed": 0, **info})

    steps = [sample(f"samples/step-{n}/0.wav", step=n, duration=5.0, adapter="a", source="s") for n in (2, 4)]
    long = sample("samples/t1/0_without.wav", duration=30.0, source="run")
    short = sample("samples/t0/0_without.wav", duration=5.0, source="run")
    assert prompt_rows(Path("."), [*steps, short, long])[0].without is short
    assert prompt_rows(Path("."), [*steps, long])[0].without is None


def test_a_refused_start_leaves_no_run_folder_and_a_missing_vae_is_named_before_any_work(cli, tmp_path, cache_dir):
    import shutil

    import torch

    from sidestep.data.audio import write_wav
    from sidestep.models.tiny import write_checkpoints
    from tests.helpers.configs import compose_cfg

    missing = cli("model=tiny", f"preprocess.audio_dir={tmp_path / 'no-songs'}", "ui.yes=true")
    assert missing.returncode == 2 and "preprocess.audio_dir" in missing.stderr, missing.stderr[-2000:]
    assert not (tmp_path / "outputs").exists()
    estimate = cli("experiment=demo", "adapter=lokr", app="estimate")
    assert estimate.returncode == 2 and not (tmp_path / "outputs").exists()
    preprocess = cli(f"audio_dir={tmp_path / 'no-songs'}", f"out_dir={tmp_path / 'tensors'}", app="preprocess")
    assert preprocess.returncode == 2 and not (tmp_path / "tensors").exists()  # nor its log folder

    write_checkpoints(compose_cfg(cache_dir).model, tmp_path / "checkpoints", variant="turbo")
    shutil.rmtree(tmp_path / "checkpoints" / "vae")
    write_wav(tmp_path / "songs" / "a.wav", torch.zeros(2, 48000))
    no_vae = cli("model=turbo", f"model.checkpoint_dir={tmp_path / 'checkpoints'}", f"preprocess.audio_dir={tmp_path / 'songs'}",
                 "ui.yes=true", "ui.plain=true")
    assert no_vae.returncode == 2 and no_vae.stderr.startswith("error: model.checkpoint_dir: no vae/ folder"), no_vae.stderr
    assert "a.wav" not in no_vae.stdout + no_vae.stderr and "songs" not in no_vae.stdout  # nothing announced
    assert not (tmp_path / "outputs").exists()
