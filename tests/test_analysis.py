"""Labels measured from the audio: the estimators get generated songs right, what `analyze` writes preprocessing
reads back unchanged, a label the user wrote survives, and `tags` edits captions in bulk."""

import ast
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from sidestep import tags
from sidestep.analysis import run as analysis_run
from sidestep.analysis.estimate import Estimate
from sidestep.analysis.key import estimate_key
from sidestep.analysis.metre import estimate_metre
from sidestep.analysis.run import REPORT, analyse_folder
from sidestep.analysis.song import SongAnalysis, analyse_file
from sidestep.config.schema import AnalyzeSettings
from sidestep.data.audio_files import decode
from sidestep.preprocessing.labels import labels_for
from sidestep.ui import songs as ui_songs

ROOT = Path(__file__).resolve().parents[1]
RATE = 22_050  # the analysis rate: no resampling in the test
SECONDS = 12.0


def bench():
    spec = importlib.util.spec_from_file_location("bench_analysis", ROOT / "scripts" / "bench_analysis.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


B = bench()
# A fixed subset of the benchmark's songs: both metres, both modes, swing, tempos where the beat is unambiguous.
SUBSET = [B.Truth(120.0, 0, "major", "4/4"), B.Truth(100.0, 9, "minor", "3/4"),
          B.Truth(140.0, 3, "major", "4/4", swing=True), B.Truth(132.0, 6, "minor", "3/4"),
          B.Truth(110.0, 7, "major", "4/4"), B.Truth(150.0, 10, "minor", "3/4")]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    paths = []
    for index, truth in enumerate(SUBSET):
        path = folder / f"clip{index}.wav"
        B.write_song(path, B.song(truth, SECONDS, RATE, index), RATE)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def measured(clips):
    return [analyse_file(path) for path in clips]


def test_tempo_is_within_2_percent_on_the_fixed_subset(measured):
    outcomes = [B.tempo_outcome(m.tempo.value, t.tempo) for m, t in zip(measured, SUBSET)]
    assert outcomes.count("right") >= 5, outcomes


def test_key_and_mode_are_exact_on_the_fixed_subset(measured):
    outcomes = [B.key_outcome(m.key.value, t) for m, t in zip(measured, SUBSET)]
    assert outcomes.count("right") >= 5, outcomes


def test_three_four_and_four_four_are_told_apart(measured):
    outcomes = [B.metre_outcome(m.metre.value, t.metre) for m, t in zip(measured, SUBSET)]
    assert outcomes.count("right") >= 5, outcomes


@pytest.mark.parametrize("accents, signature", [
    ([1.0, 0.0, 0.5, 0.0], "4/4"),
    ([1.0, 0.2, 0.2], "3/4"),
    ([1.0, 0.0, 0.5, 0.0, 0.5, 0.0], "3/4"),  # a slow 3/4 whose eighth notes the beat tracker followed
])
def test_the_bar_grouping_of_beat_accents_decides_the_metre(accents, signature):
    rng = np.random.default_rng(0)
    features = [np.tile(accents, 8) + 0.05 * rng.standard_normal(8 * len(accents)) for _ in range(3)]
    found = estimate_metre(features)
    assert found.value == signature and found.confidence > AnalyzeSettings.min_signature_confidence


def test_duration_and_loudness_are_measured(measured):
    assert all(m.duration == pytest.approx(SECONDS, abs=0.01) for m in measured)
    assert all(m.peak_db == pytest.approx(-6.02, abs=0.1) for m in measured)  # the generator peaks at 0.5
    assert all(-40 < m.lufs < -10 for m in measured)


def test_a_key_between_two_profiles_gets_a_low_confidence():
    c_major = np.zeros((12, 4))
    c_major[[0, 4, 7]] = 1.0  # C E G: C major by a wide margin
    ambiguous = np.ones((12, 4))
    ambiguous[[0, 2, 4, 5, 7, 9, 11]] = 2.0
    ambiguous[[0, 4, 7, 9, 11]] = 3.0  # white keys, C E G A B stressed: C major and E minor fit almost alike
    clear, unclear = estimate_key(c_major), estimate_key(ambiguous)
    assert clear.value == "C major" and clear.confidence > unclear.confidence
    assert unclear.confidence < AnalyzeSettings.min_key_confidence


def fake_analysis(bpm=97.6, key="E minor", signature="3/4", confidence=0.9):
    return SongAnalysis(Estimate(bpm, confidence), Estimate(key, confidence), Estimate(signature, confidence),
                        10.0, -14.0, -1.0)


@pytest.fixture
def songs(tmp_path, clips):
    folder = tmp_path / "songs"
    folder.mkdir()
    for name in ("a.wav", "b.wav"):
        shutil.copy(clips[0], folder / name)
    return folder


def analyse(folder, policy="fill_missing", force=False):
    return analyse_folder(folder, policy, OmegaConf.structured(AnalyzeSettings(workers=1)), force, NoProgress)


class NoProgress:
    def __init__(self, title, seconds):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def advance(self, seconds, name):
        pass


def test_preprocessing_reads_back_what_analyze_measured(songs):
    outcome = analyse(songs)
    assert sorted(outcome.analysed) == ["a.wav", "b.wav"]
    report = json.loads((songs / REPORT).read_text())["songs"]["a.wav"]["analysis"]
    label = labels_for(songs / "a.wav")
    assert label.bpm == round(report["bpm"]["value"]) == 120
    assert label.keyscale == report["key"]["value"] == "C major"
    assert label.timesignature == report["signature"]["value"].split("/")[0] == "4"


def test_fill_missing_keeps_what_the_user_wrote_and_overwrite_replaces_it(songs, monkeypatch):
    monkeypatch.setattr(analysis_run, "analyse_file", lambda path: fake_analysis())
    (songs / "a.txt").write_text("caption: my song\ntempo: 84\nlyrics:\nla la\n")
    analyse(songs)
    label = labels_for(songs / "a.wav")
    assert (label.bpm, label.keyscale, label.timesignature, label.lyrics) == (84, "E minor", "3", "la la")
    assert labels_for(songs / "b.wav").bpm == 98
    analyse(songs, policy="overwrite")
    assert labels_for(songs / "a.wav").bpm == 98
    assert (songs / "a.txt").read_text().count("98") == 1  # the user's `tempo:` line rewritten, not a second key


def test_a_value_analyze_wrote_before_is_updated_when_the_audio_changes(songs, monkeypatch):
    monkeypatch.setattr(analysis_run, "analyse_file", lambda path: fake_analysis(bpm=90.0))
    analyse(songs)
    assert labels_for(songs / "a.wav").bpm == 90
    (songs / "a.wav").write_bytes((songs / "a.wav").read_bytes() + b"\0\0")  # new audio
    monkeypatch.setattr(analysis_run, "analyse_file", lambda path: fake_analysis(bpm=120.0))
    outcome = analyse(songs)
    assert outcome.analysed == ["a.wav"] and outcome.skipped == ["b.wav"]
    assert labels_for(songs / "a.wav").bpm == 120


def test_a_song_measured_before_is_not_measured_again(songs, monkeypatch):
    monkeypatch.setattr(analysis_run, "analyse_file", lambda path: fake_analysis())
    analyse(songs)

    def must_not_run(path):
        raise AssertionError(f"{path} measured again")

    monkeypatch.setattr(analysis_run, "analyse_file", must_not_run)
    outcome = analyse(songs, policy="overwrite")
    assert sorted(outcome.skipped) == ["a.wav", "b.wav"] and not outcome.analysed


def test_low_confidence_values_are_flagged_not_written(songs, monkeypatch):
    monkeypatch.setattr(analysis_run, "analyse_file", lambda path: fake_analysis(confidence=0.1))
    outcome = analyse(songs)
    assert {c.status for c in outcome.changes} == {"flagged"}
    assert not (songs / "a.txt").exists()


def test_write_off_measures_without_touching_sidecars(songs, monkeypatch):
    monkeypatch.setattr(analysis_run, "analyse_file", lambda path: fake_analysis())
    analyse(songs, policy="off")
    assert not (songs / "a.txt").exists() and (songs / REPORT).is_file()


def test_a_json_sidecar_keeps_its_keys_and_gets_the_new_ones(songs, monkeypatch):
    monkeypatch.setattr(analysis_run, "analyse_file", lambda path: fake_analysis())
    (songs / "a.json").write_text(json.dumps({"caption": "x", "key": "", "custom_tag": "t"}))
    analyse(songs)
    data = json.loads((songs / "a.json").read_text())
    assert data == {"caption": "x", "key": "E minor", "custom_tag": "t", "bpm": 98, "timesignature": "3/4"}


def test_each_bad_file_gets_one_line_and_the_rest_are_analysed(songs, monkeypatch):
    monkeypatch.setattr(analysis_run, "analyse_file", lambda path: (decode(path), fake_analysis())[1])
    (songs / "broken.wav").write_bytes(b"not audio")
    (songs / "b.txt").write_text("caption: x\nmood: sad\n")  # a sidecar preprocessing refuses
    outcome = analyse(songs)
    assert outcome.analysed == ["a.wav", "b.wav"]
    assert [(p.name, reason.split(" (")[0]) for p, reason in outcome.failed] == [
        ("broken.wav", "unreadable or corrupt audio"), ("b.wav", f"{songs / 'b.txt'}, line 2: unknown key 'mood'")]


def test_preprocess_analyze_puts_measured_labels_into_the_samples_and_keeps_the_users(tmp_path, monkeypatch):
    from sidestep.ui.songs import preprocess_and_report
    from tests.helpers.audio import header, settings, write_song

    monkeypatch.setattr(analysis_run, "analyse_file", lambda path: fake_analysis())  # forked workers inherit it
    folder = tmp_path / "songs"
    folder.mkdir()
    for name in ("a.wav", "b.wav"):
        write_song(folder / name, 44_100, 1)
    (folder / "a.txt").write_text("bpm: 84\n")
    cfg = settings(tmp_path, folder, "analyze=fill_missing")
    preprocess_and_report(cfg, cfg.model, plain=True)
    a, b = (header(tmp_path / "out" / f"{name}.safetensors") for name in ("a", "b"))
    assert (a["bpm"], a["keyscale"], a["timesignature"]) == (84, "E minor", "3")
    assert (b["bpm"], b["keyscale"], b["timesignature"]) == (98, "E minor", "3")


def test_tags_add_remove_replace_and_dry_run(songs, capsys):
    (songs / "a.txt").write_text("caption: lofi, piano\nbpm: 80\n")
    shutil.copy(songs / "b.wav", songs / "c.wav")
    (songs / "c.caption.txt").write_text("soft jazz")  # ACE-Step's caption file
    tags.main([str(songs), "add", "jzz", "--dry-run"])
    assert "+caption: jzz, lofi, piano" in capsys.readouterr().out
    assert (songs / "a.txt").read_text() == "caption: lofi, piano\nbpm: 80\n"
    tags.main([str(songs), "add", "jzz", "--position", "append"])
    assert labels_for(songs / "a.wav").caption == "lofi, piano, jzz"
    assert labels_for(songs / "b.wav").caption == "b, jzz"  # the file-name caption kept
    assert labels_for(songs / "c.wav").caption == "soft jazz, jzz"
    tags.main([str(songs), "replace", "lofi", "lo-fi"])
    tags.main([str(songs), "remove", "piano"])
    assert labels_for(songs / "a.wav").caption == "lo-fi, jzz"
    tags.main([str(songs), "list"])
    assert "jzz" in capsys.readouterr().out


def test_plain_lyrics_sidecar_keeps_its_lyrics_when_labels_are_added(songs, monkeypatch):
    monkeypatch.setattr(analysis_run, "analyse_file", lambda path: fake_analysis())
    (songs / "a.txt").write_text("[Verse]\nhello: world\n")
    before = labels_for(songs / "a.wav").lyrics
    analyse(songs)
    assert labels_for(songs / "a.wav").lyrics == before and labels_for(songs / "a.wav").bpm == 98


def test_the_wizard_offers_analysis_for_songs_without_labels_only(songs, monkeypatch):
    asked, analysed = [], []
    monkeypatch.setattr(ui_songs.Confirm, "ask", lambda *a, **k: asked.append(a) or True)
    monkeypatch.setattr(ui_songs, "analyse_and_report", lambda folder, policy, *rest: analysed.append((folder, policy)))
    ui_songs.offer_analysis(str(songs), plain=True)
    assert analysed == [(str(songs), "fill_missing")]
    (songs / "b.txt").write_text("caption: mine\n")
    ui_songs.offer_analysis(str(songs), plain=True)
    assert len(asked) == 1 and len(analysed) == 1


def test_a_missing_songs_folder_is_one_line_and_is_not_created(tmp_path):
    missing = tmp_path / "no-songs"
    proc = subprocess.run([sys.executable, "-m", "sidestep.analyze", str(missing)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)
    assert proc.returncode == 2 and proc.stderr == f"error: songs_dir: {missing} is not a folder of songs\n"
    assert not missing.exists()


def module_imports(path: Path):
    """The modules a file imports when it is loaded (imports inside functions left out)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_training_and_preprocessing_do_not_load_librosa():
    src = ROOT / "src"
    seen, todo = set(), ["sidestep.train", "sidestep.preprocess", "sidestep.wizard", "sidestep.tags"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = src / Path(*name.split(".")).with_suffix(".py")
        if not path.is_file():
            path = src / Path(*name.split(".")) / "__init__.py"
        if path.is_file():
            todo += [m for m in module_imports(path) if m.startswith("sidestep")]
            assert not {"librosa", "pyloudnorm", "numba"} & {m.split(".")[0] for m in module_imports(path)}, name
    assert "sidestep.preprocess" in seen and "sidestep.ui.songs" in seen  # the walk did reach where analysis starts


def test_the_offer_counts_one_song_as_one(tmp_path, monkeypatch):
    """Issue 27: a folder of one song was offered as "None of the 1 songs has a label file"."""
    import soundfile as sf

    (tmp_path / "one").mkdir()
    sf.write(tmp_path / "one" / "a.wav", np.zeros((4800, 2), dtype="float32"), 48000)
    asked = []
    monkeypatch.setattr(ui_songs.Confirm, "ask", lambda question, **k: asked.append(question) or False)
    ui_songs.offer_analysis(str(tmp_path / "one"), plain=True)
    assert asked and asked[0].startswith("The song has no label file. Measure"), asked
    sf.write(tmp_path / "one" / "b.wav", np.zeros((4800, 2), dtype="float32"), 48000)
    ui_songs.offer_analysis(str(tmp_path / "one"), plain=True)
    assert asked[1].startswith("None of the 2 songs has a label file. Measure"), asked
