"""Labels come from the files users already keep (sidecars, ACE-Step's dataset.json), and the prompts built from
them are the exact text ACE-Step's encoders see."""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sidestep.errors import ConfigError, DataError
from sidestep.models.tiny import tiny_text_encoder, tiny_tokenizer
from sidestep.preprocessing.encoding import encode_text, text_pipeline
from sidestep.preprocessing.labels import (
    INSTRUMENTAL,
    Label,
    LabelError,
    labels_for,
    read_dataset_json,
    with_trigger,
)


def song(folder: Path, name: str = "song.wav") -> Path:
    path = folder / name
    path.write_bytes(b"RIFF")  # labels never decode audio; the file only has to exist
    return path


def test_txt_sidecar_with_a_multi_line_lyrics_block(tmp_path):
    audio = song(tmp_path)
    (tmp_path / "song.txt").write_text(
        "\ufeffCaption: warm lofi piano, vinyl crackle\r\n"
        "bpm: 82\r\n"
        "key: A minor\r\n"
        "signature: 4/4\r\n"
        "language: EN\r\n"
        "repeat: 3\r\n"
        "lyrics:\r\n"
        "[Verse 1]\r\n"
        "Chorus: not a key here\r\n"
        "\r\n"
        "[Chorus]\r\n"
        "la la\r\n", encoding="utf-8")
    assert labels_for(audio, None) == Label(
        caption="warm lofi piano, vinyl crackle", lyrics="[Verse 1]\nChorus: not a key here\n\n[Chorus]\nla la",
        bpm=82, keyscale="A minor", timesignature="4", language="en", is_instrumental=False)


@pytest.mark.parametrize("lines", [
    "tempo: 120\nkeyscale: C major\ntimesignature: 3",
    "bpm: 120.0 BPM\nscale: C major\ntime_signature: 3/4",
    "BPM: 120\nKey: C major\nTime Signature: 3/4",
])
def test_txt_aliases_set_the_same_fields(tmp_path, lines):
    audio = song(tmp_path)
    (tmp_path / "song.txt").write_text(f"caption: jazz\n{lines}\n")
    label = labels_for(audio, None)
    assert (label.bpm, label.keyscale, label.timesignature) == (120, "C major", "3")


def test_json_sidecar(tmp_path):
    audio = song(tmp_path)
    (tmp_path / "song.json").write_text(json.dumps({
        "caption": "dark techno", "bpm": 134, "keyscale": "F# minor", "time_signature": 4, "language": "de",
        "lyrics": "Line one\nLine two", "duration": 200}))
    assert labels_for(audio, None) == Label(caption="dark techno", lyrics="Line one\nLine two", bpm=134,
                                            keyscale="F# minor", timesignature="4", language="de",
                                            is_instrumental=False)


def test_ace_step_caption_and_lyrics_files(tmp_path):
    audio = song(tmp_path, "track.mp3")
    (tmp_path / "track.caption.txt").write_text("ambient pads\n")
    (tmp_path / "track.lyrics.txt").write_text("[Verse]\nhello\n")
    label = labels_for(audio, None)
    assert (label.caption, label.lyrics, label.is_instrumental) == ("ambient pads", "[Verse]\nhello", False)


def test_plain_txt_is_lyrics_and_the_caption_file_fills_the_caption(tmp_path):
    audio = song(tmp_path)
    (tmp_path / "song.txt").write_text("[Verse]\nWalking: down the road\n")
    (tmp_path / "song.caption.txt").write_text("folk guitar")
    label = labels_for(audio, None)
    assert (label.caption, label.lyrics) == ("folk guitar", "[Verse]\nWalking: down the road")


def test_without_sidecars_the_file_name_is_the_caption(tmp_path):
    label = labels_for(song(tmp_path, "my_song-01.flac"), None)
    assert label == Label(caption="my song 01", lyrics=INSTRUMENTAL, language="unknown", is_instrumental=True)


@pytest.mark.parametrize("text", ["caption: drums\nlyrics:\n\n", "caption: drums\ninstrumental: yes\nlyrics: la"])
def test_missing_lyrics_or_instrumental_mean_instrumental(tmp_path, text):
    audio = song(tmp_path)
    (tmp_path / "song.txt").write_text(text)
    label = labels_for(audio, None)
    assert (label.lyrics, label.is_instrumental) == (INSTRUMENTAL, True)


@pytest.mark.parametrize("name,text,problem", [
    ("song.txt", "caption: x\nbpm: fast\n", "bpm: 'fast' is not a number"),
    ("song.txt", "caption: x\ncapton: y\n", "line 2: unknown key 'capton'"),
    ("song.txt", "caption: x\ntempo: 90\nbpm: 91\n", "'tempo' and 'bpm' both set the bpm"),
    ("song.txt", "caption: x\nsignature: waltz\n", "signature: 'waltz' is not a time signature"),
    ("song.txt", "caption: x\nlanguage: English\n", "language: 'English' is not a language code"),
    ("song.json", '{"caption": "x", "bpm": 90,}', "not valid JSON"),
    ("song.json", "[" * 100000 + "]" * 100000, "nested too deeply"),
    ("song.json", '{"caption": "x", "instrumental": "maybe"}', "instrumental: 'maybe' is not true or false"),
    ("song.txt", b"caption: caf\xe9\n", "not UTF-8"),
])
def test_a_bad_sidecar_names_the_file_and_the_problem(tmp_path, name, text, problem):
    audio = song(tmp_path)
    sidecar = tmp_path / name
    sidecar.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(LabelError, match=problem) as caught:
        labels_for(audio, None)
    assert str(sidecar) in str(caught.value) and isinstance(caught.value, DataError)


def test_two_key_value_sidecars_for_one_song_are_refused(tmp_path):
    audio = song(tmp_path)
    (tmp_path / "song.txt").write_text("caption: a\n")
    (tmp_path / "song.json").write_text('{"caption": "b"}')
    with pytest.raises(LabelError, match="keep one"):
        labels_for(audio, None)


def ace_step_dataset(folder: Path, samples, **metadata) -> Path:
    """A dataset.json laid out as ACE-Step 1.5's dataset builder saves it."""
    meta = {"name": "mine", "custom_tag": "", "tag_position": "prepend", "created_at": "2026-01-01T00:00:00",
            "num_samples": len(samples), "all_instrumental": False, "genre_ratio": 0, **metadata}
    path = folder / "dataset.json"
    path.write_text(json.dumps({"metadata": meta, "samples": samples}))
    return path


def entry(audio_path: str, filename: str, **fields):
    return {"id": "a1b2c3d4", "audio_path": audio_path, "filename": filename, "caption": "", "genre": "",
            "lyrics": "[Instrumental]", "raw_lyrics": "", "formatted_lyrics": "", "bpm": None, "keyscale": "",
            "timesignature": "", "duration": 30, "language": "unknown", "is_instrumental": True, "custom_tag": "",
            "labeled": True, "prompt_override": None, **fields}


def test_dataset_json_wins_over_sidecars_and_applies_its_tag(tmp_path):
    songs = tmp_path / "songs"
    songs.mkdir()
    first, second, third = song(songs, "one.wav"), song(songs, "two.wav"), song(songs, "three.wav")
    (songs / "one.txt").write_text("caption: from the sidecar\n")
    path = ace_step_dataset(tmp_path, [
        entry(str(first), "one.wav", caption="upbeat pop", bpm=120, keyscale="C major", timesignature="4",
              lyrics="[Verse]\nhi", is_instrumental=True, language="en", custom_tag="zx9"),
        entry("C:\\Users\\me\\music\\two.wav", "two.wav", genre="drum and bass", custom_tag="zx9"),
    ], custom_tag="zx9", tag_position="append")
    dataset = read_dataset_json(path, songs)
    assert set(dataset) == {first.resolve(), second.resolve()}
    assert labels_for(first, dataset) == Label(caption="upbeat pop, zx9", lyrics="[Verse]\nhi", bpm=120,
                                               keyscale="C major", timesignature="4", language="en",
                                               is_instrumental=False)
    assert labels_for(second, dataset).caption == "drum and bass, zx9"
    assert labels_for(third, dataset).caption == "three"


def test_dataset_json_entry_without_its_audio_is_named(tmp_path):
    path = ace_step_dataset(tmp_path, [entry("/nowhere/gone.wav", "gone.wav", caption="x")])
    with pytest.raises(LabelError, match=r"samples\[0\] \(gone.wav\): audio not found"):
        read_dataset_json(path, tmp_path)


def test_a_file_that_is_no_ace_step_dataset_is_refused(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text('[{"caption": "x"}]')
    with pytest.raises(LabelError, match='no "samples" list'):
        read_dataset_json(path, tmp_path)


@pytest.mark.parametrize("tag,position,caption", [
    ("zx9", "prepend", "zx9, lofi, piano"),
    ("zx9", "append", "lofi, piano, zx9"),
    ("zx9", "replace", "zx9"),
    ("piano", "prepend", "lofi, piano"),  # already there: not doubled
    (None, "prepend", "lofi, piano"),
    ("  ", "append", "lofi, piano"),
])
def test_trigger_tag(tag, position, caption):
    assert with_trigger(Label(caption="lofi, piano", lyrics=INSTRUMENTAL), tag, position).caption == caption


def test_an_unknown_trigger_position_is_a_config_error():
    with pytest.raises(ConfigError, match="'middle'"):
        with_trigger(Label(caption="x", lyrics=INSTRUMENTAL), "zx9", "middle")


class RecordingTokenizer:
    """The tiny tokenizer, remembering every text it was given."""

    def __init__(self):
        self.inner, self.texts = tiny_tokenizer(), []

    def __call__(self, texts, **kwargs):
        self.texts += texts
        return self.inner(texts, **kwargs)


def prompts_for(label, seconds, make_cfg):
    """The two texts preprocessing gives the text encoder for `label` (caption prompt, lyrics prompt)."""
    model = make_cfg().model
    tokenizer = RecordingTokenizer()
    pipe = text_pipeline(tiny_text_encoder(model), tokenizer)
    encode_text(pipe, label, seconds, OmegaConf.create({"max_text_tokens": 256, "max_lyric_tokens": 2048}))
    return tokenizer.texts


def test_caption_prompt_is_acesteps_text_exactly(make_cfg):
    label = Label(caption="warm lofi piano", lyrics="[Verse]\nla", bpm=82, keyscale="A minor", timesignature="4",
                  language="en", is_instrumental=False)
    caption, lyrics = prompts_for(label, 183.97, make_cfg)
    assert caption == (
        "# Instruction\nFill the audio semantic mask based on the given conditions:\n\n"
        "# Caption\nwarm lofi piano\n\n"
        "# Metas\n- bpm: 82\n- timesignature: 4\n- keyscale: A minor\n- duration: 183 seconds\n"
        "<|endoftext|>\n")
    assert lyrics == "# Languages\nen\n\n# Lyric\n[Verse]\nla<|endoftext|>"


def test_prompts_say_n_a_for_what_is_not_known(make_cfg):
    caption, lyrics = prompts_for(Label(caption="noise", lyrics=INSTRUMENTAL), 30, make_cfg)
    assert "# Metas\n- bpm: N/A\n- timesignature: N/A\n- keyscale: N/A\n- duration: 30 seconds\n<|endoftext|>\n" \
        in caption
    assert lyrics == "# Languages\nunknown\n\n# Lyric\n[Instrumental]<|endoftext|>"


def test_metadata_is_json_ready_with_acesteps_names():
    label = Label(caption="c", lyrics="l", bpm=90, keyscale="D major", timesignature="3", language="fr",
                  is_instrumental=False)
    assert json.loads(json.dumps(label.metadata())) == {
        "caption": "c", "lyrics": "l", "bpm": 90, "keyscale": "D major", "timesignature": "3", "language": "fr",
        "is_instrumental": False}
