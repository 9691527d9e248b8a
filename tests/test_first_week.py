"""What a new user trips on in the first week: the tiny checkpoints command says what it costs, and samples made
after training play at the length of the training samples they are heard beside."""

from pathlib import Path

from hydra import compose, initialize_config_module

from sidestep.report.listening import Sample, prompt_rows


def test_the_tiny_command_says_how_long_it_takes_before_loading_torch(monkeypatch, tmp_path, capsys):
    import sidestep.models.tiny
    from sidestep.tiny import main

    said = []
    monkeypatch.setattr(sidestep.models.tiny, "write_checkpoints",
                        lambda cfg, out, variant: said.append(capsys.readouterr().out) or out / f"acestep-v15-{variant}")
    main([str(tmp_path / "tiny"), "--variant", "base"])
    assert "a minute" in said[0] and str(tmp_path / "tiny") in said[0]  # before the slow part, not after it


def test_sample_renders_as_long_as_the_runs_songs_by_default(make_cfg):
    from sidestep.sampling.session import run_duration

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
