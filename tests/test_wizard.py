"""The wizard, driven through a pseudo-terminal: defaults come from the config tree, a bad answer is refused with
the trainer's own message and asked again, `back` works, and the recipe it writes composes to exactly what was
answered, passes the trainer's checks, and is what its printed command trains."""

import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
import sidestep.conf
import torch
from hydra import compose, initialize_config_module
from safetensors.torch import save_file

from sidestep.config import checked_train_config
from sidestep.config.overrides import check_overrides
from sidestep.recipes import HEADER, destination
from sidestep.wizard import main
from tests.helpers.processes import start_in_terminal
from tests.helpers.terminal import HANG_GUARD


@pytest.fixture
def folders(tmp_path):
    """An ACE-Step checkpoints folder with two variants (config only) and the shared encoder folders (empty), and a
    dataset of two 30 s samples."""
    for variant in ("base", "sft"):
        (tmp_path / "checkpoints" / f"acestep-v15-{variant}").mkdir(parents=True)
        (tmp_path / "checkpoints" / f"acestep-v15-{variant}" / "config.json").write_text("{}")
    for shared in ("vae", "Qwen3-Embedding-0.6B"):  # what preprocessing songs needs beside the variants
        (tmp_path / "checkpoints" / shared).mkdir()
    (tmp_path / "tensors" / "jazz").mkdir(parents=True)
    for i in range(2):
        save_file({"target_latents": torch.zeros(750, 64), "attention_mask": torch.ones(750),
                   "encoder_hidden_states": torch.zeros(8, 2048), "encoder_attention_mask": torch.ones(8),
                   "context_latents": torch.zeros(750, 128)}, tmp_path / "tensors" / "jazz" / f"song{i}.safetensors")
    return tmp_path


class Terminal:
    """A command in a pseudo-terminal: `answer(title, text)` waits for the question, then types the answer."""

    def __init__(self, args, cwd: Path):
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}  # pytest sets COLUMNS=80
        assert args[0] == "-m"
        self.command = start_in_terminal(*args[1:], cwd=cwd, env=env, dimensions=(50, 250), timeout=HANG_GUARD)
        self.child = self.command.child
        self.child.logfile_read = self.transcript = io.StringIO()
        self.child.delaybeforesend = None  # the wizard reads whole lines: no need to pace the typing

    def answer(self, title: str, text: str = "") -> str:
        self.child.expect_exact(title)
        shown = self.child.before  # what came before the question: help, choices, refusals
        self.child.expect_exact(": ")
        self.child.sendline(text)
        return shown

    def see(self, text: str) -> None:
        self.child.expect_exact(text)

    def finish(self) -> str:
        """Wait for the end; the whole transcript."""
        self.child.read()
        assert self.command.finish() == 0, self.transcript.getvalue()[-3000:]
        return self.transcript.getvalue()


def composed_recipe(config_dir: Path, name: str):
    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        return compose(config_name="train", overrides=[f"hydra.searchpath=[file://{config_dir}]", f"experiment={name}"])


def printed_command(output: str, config_dir: Path, name: str):
    command = re.search(r"train it with:\s+(python -m sidestep\.train .*)", output).group(1).strip()
    assert shlex.split(command) == ["python", "-m", "sidestep.train", "--config-dir", str(config_dir), f"experiment={name}"]
    return shlex.split(command)


@pytest.mark.slow
def test_basic_mode_with_a_refused_answer_and_back(folders):
    out = folders / "recipes"
    term = Terminal(["-m", "sidestep.wizard", "--out", str(out), "ui.plain=true"], folders)
    term.answer("Questions", "")
    term.answer("Dataset folder", "tensors/jazz")  # relative to where the wizard runs
    term.see("2 samples, 1.0 min of audio")
    term.answer("ACE-Step checkpoints folder", "nowhere")
    term.see(f"refused: model.checkpoint_dir: {folders / 'nowhere'} does not exist")
    term.answer("ACE-Step checkpoints folder", "checkpoints")
    term.see("variants found: base, sft")
    assert "1) auto  2) base  3) sft" in term.answer("Model variant", "base")
    assert "2) high_quality  3) quick_test  4) recommended" in term.answer("Recipe", "recommended")
    term.answer("VRAM profile (vram=) [none]", "12gb")
    assert "1) dora  2) loha  3) lokr  4) lora  5) oft" in term.answer("Adapter type (adapter=) [lora]", "lokr")
    term.answer("Frozen DiT storage (model.quantize) [null]", "back")  # 12gb keeps the DiT in bf16
    term.answer("Adapter type (adapter=) [lokr]", "back")
    term.answer("VRAM profile (vram=) [12gb]", "8gb")  # back: the earlier answer is the default
    term.answer("Adapter type (adapter=) [lokr]", "")
    term.answer("Frozen DiT storage (model.quantize) [nf4]", "int8")  # 8gb holds it in NF4
    term.see("refused: model.quantize: int8: a Lokr adapter cannot train on a bitsandbytes base")
    term.answer("Frozen DiT storage", "null")
    term.answer("Adapter rank (adapter.rank) [16]", "0")  # 8gb's rank is the default
    term.see("refused: adapter.rank: must be at least 1 (got 0)")
    term.answer("Adapter rank", "48")
    term.answer("Adapter alpha (adapter.alpha) [null]", "")  # null: 2 x rank, following the rank
    term.answer("Epochs (trainer.epochs) [1000]", "20")
    term.answer("Recipe name [jazz]", "")
    term.answer("Start training now?", "n")
    output = term.finish()

    text = (out / "experiment" / "jazz.yaml").read_text()
    assert text.splitlines()[:2] == ["# @package _global_", text.splitlines()[1]] and HEADER in text
    cfg = composed_recipe(out, "jazz")
    assert (cfg.model.variant, cfg.model.checkpoint_dir, cfg.data.dataset_dir) == (
        "base", str(folders / "checkpoints"), str(folders / "tensors" / "jazz"))
    assert cfg.adapter._target_ == "sidestep.adapters.lokr.Lokr"
    assert (cfg.adapter.rank, cfg.adapter.alpha, cfg.trainer.epochs) == (48, None, 20)  # the recipe leaves alpha to the rank
    assert cfg.optimizer._target_.endswith("AdamW8bit") and cfg.optimizer.lr == 3e-4  # recommended
    assert (cfg.trainer.gradient_accumulation, cfg.data.crop_seconds, cfg.adapter.target_modules) == (
        8, 30, ["q_proj", "k_proj", "v_proj", "o_proj"])  # 8gb, which composes after the recipe
    assert checked_train_config(cfg).adapter.alpha == 96
    assert cfg.model.quantize is None  # LoKr trains on a plain base: the answer overrides 8gb's NF4

    command = printed_command(output, out, "jazz")
    shown = subprocess.run([sys.executable, *command[1:], "--cfg", "job"], capture_output=True, text=True, cwd="/")
    assert shown.returncode == 0 and "rank: 48" in shown.stdout, shown.stderr


@pytest.mark.slow
def test_advanced_mode_in_colour_with_prodigy(folders):
    out = folders / "recipes"
    term = Terminal(["-m", "sidestep.wizard", "--out", str(out), "experiment=quick_test"], folders)
    term.answer("Questions", "2")  # a choice by its number
    term.answer("Dataset folder", str(folders / "tensors" / "jazz"))
    term.answer("ACE-Step checkpoints folder", str(folders / "checkpoints"))
    term.answer("Model variant", "")
    term.answer("Recipe", "")  # the command line's experiment=quick_test is the default
    term.answer("VRAM profile", "")
    term.answer("Adapter type", "")
    term.answer("Frozen DiT storage", "int8")
    for title in ("Adapter rank", "Adapter alpha", "Epochs"):
        term.answer(title, "")
    term.answer("Device", "gpu")
    term.see("trainer.device: must be auto, cpu, cuda, cuda:N, mps or xpu (got 'gpu')")
    term.answer("Device", "cpu")
    term.answer("Precision", "fp32")
    term.answer("Optimizer", "prodigy")
    term.see("its lr is usually between 0.1 and 10; use about 1")  # quick_test's lr 3e-4 under Prodigy
    for title, text in (("Learning rate", "1.0"), ("Weight decay", ""), ("Learning-rate schedule", "constant"),
                        ("Warm-up steps", ""), ("Gradient clipping", "0.5"), ("Batch size", "2"),
                        ("Gradient accumulation steps", "1"), ("Crop length in seconds", "10"),
                        ("Data-loader workers", "0"), ("Pin memory", "false"), ("Prefetch factor", ""),
                        ("Persistent workers", "false"), ("Held-out fraction", "0.25"),
                        ("Early stopping patience", "3"), ("EMA of the adapter weights", "0.999"),
                        ("Checkpoint every N epochs", ""), ("Log every N steps", "5"),
                        ("Per-layer gradient norms every N steps", ""), ("Recipe name", "adv"),
                        ("Start training now?", "n")):
        term.answer(title, text)
    output = term.finish()

    cfg = composed_recipe(out, "adv")
    assert cfg.optimizer._target_ == "prodigyopt.Prodigy" and cfg.optimizer.lr == 1.0
    assert cfg.scheduler._target_.endswith(".Constant")
    assert (cfg.trainer.device, cfg.trainer.precision, cfg.trainer.max_grad_norm, cfg.trainer.batch_size) == (
        "cpu", "fp32", 0.5, 2)
    assert (cfg.data.crop_seconds, cfg.data.num_workers, cfg.data.pin_memory, cfg.trainer.log_every) == (10, 0, False, 5)
    assert (cfg.adapter.rank, cfg.trainer.epochs, cfg.model.variant, cfg.model.quantize) == (16, 10, "auto", "int8")
    assert (cfg.data.val_fraction, cfg.trainer.early_stop.patience, cfg.trainer.ema.decay) == (0.25, 3, 0.999)
    checked_train_config(cfg)
    printed_command(output, out, "adv")


def test_without_a_terminal_every_default_is_taken_and_nothing_starts(folders, monkeypatch, capsys):
    monkeypatch.chdir(folders)
    monkeypatch.setattr("sidestep.wizard.is_interactive", lambda: False)  # even under pytest -s at a terminal
    main(["--out", "recipes", f"data.dataset_dir={folders / 'tensors' / 'jazz'}",
          f"model.checkpoint_dir={folders / 'checkpoints'}", "model=sft"])  # returns: no training started
    assert composed_recipe(folders / "recipes", "jazz").model.variant == "sft"
    out = capsys.readouterr().out
    printed_command(out, folders / "recipes", "jazz")
    assert "Start training" not in out

    with pytest.raises(SystemExit) as stop:
        main(["--out", "recipes"])
    assert stop.value.code == 2 and capsys.readouterr().err == "error: data.dataset_dir: needs an answer\n"


def test_a_folder_of_songs_is_preprocessed_before_training(folders, monkeypatch, capsys):
    from sidestep.data.audio import write_wav

    songs = folders / "songs"
    for name in ("a.wav", "b.wav"):
        write_wav(songs / name, torch.zeros(2, 48000 * 3))
    monkeypatch.chdir(folders)
    monkeypatch.setattr("sidestep.wizard.is_interactive", lambda: False)
    main(["--out", "recipes", f"data.dataset_dir={songs}", f"model.checkpoint_dir={folders / 'checkpoints'}", "model=sft"])
    cfg = composed_recipe(folders / "recipes", "songs")
    assert (cfg.preprocess.audio_dir, cfg.preprocess.out_dir) == (str(songs), str(folders / "songs-tensors"))
    assert checked_train_config(cfg).data.dataset_dir is None  # sidestep.train preprocesses into out_dir, then trains on it
    printed_command(capsys.readouterr().out, folders / "recipes", "songs")


@pytest.mark.slow
def test_train_without_a_dataset_offers_the_wizard_at_a_terminal(tmp_path):
    term = Terminal(["-m", "sidestep.train", "model=sft", "ui.plain=true"], tmp_path)
    term.answer("No data.dataset_dir given. Set up the run with the wizard?", "y")
    term.answer("Questions", "")
    term.see("Dataset folder (data.dataset_dir): ")  # asked: input typed before the question is discarded
    term.child.send("\x04")  # Ctrl-D: the end of the input
    term.see("error: the input ended before the last question; nothing was written")
    term.child.expect(pexpect.EOF)
    assert term.command.finish() == 2


def test_recipes_go_to_the_users_config_folder_and_name_their_runs_without_a_time(folders, monkeypatch, capsys):
    user = folders / "user-config"
    monkeypatch.setenv("SIDESTEP_CONFIG_DIR", str(user))
    monkeypatch.chdir(folders)
    monkeypatch.setattr("sidestep.wizard.is_interactive", lambda: False)
    main([f"data.dataset_dir={folders / 'tensors' / 'jazz'}", f"model.checkpoint_dir={folders / 'checkpoints'}"])
    recipe = user / "experiment" / "jazz.yaml"
    assert recipe.is_file() and not re.search(r"\d{8}-\d{6}", recipe.read_text().split("\n", 2)[2])
    command = re.search(r"train it with:\s+(python -m sidestep\.train .*)", capsys.readouterr().out).group(1)
    assert shlex.split(command) == ["python", "-m", "sidestep.train", "experiment=jazz"]  # no --config-dir needed
    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=jazz"])  # found through conf/train.yaml's search path
    assert (cfg.run.name, cfg.data.dataset_dir) == ("jazz", str(folders / "tensors" / "jazz"))
    check_overrides(["experiment=jazz"], Path(sidestep.conf.__file__).parent)  # an option like the shipped ones
    assert destination(Path("elsewhere")) == (Path("elsewhere").resolve(), ["--config-dir", str(Path("elsewhere").resolve())])


def test_the_user_config_folder_follows_the_platform(monkeypatch, tmp_path):
    from sidestep.user_config import user_config_dir

    monkeypatch.delenv("SIDESTEP_CONFIG_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert user_config_dir() == tmp_path / "xdg" / "sidestep"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("APPDATA", str(tmp_path / "AppData"))
    assert user_config_dir() == tmp_path / "AppData" / "sidestep"
    monkeypatch.setenv("SIDESTEP_CONFIG_DIR", str(tmp_path / "mine"))
    assert user_config_dir() == tmp_path / "mine"


def test_a_songs_folder_that_does_not_exist_is_one_line(folders, monkeypatch, capsys):
    monkeypatch.chdir(folders)
    monkeypatch.setattr("sidestep.wizard.is_interactive", lambda: False)
    with pytest.raises(SystemExit) as stop:
        main(["--out", "recipes", f"data.dataset_dir={folders / 'no-songs'}", f"model.checkpoint_dir={folders / 'checkpoints'}"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: data.dataset_dir: ") and str(folders / "no-songs") in err


def test_the_song_count_leaves_out_the_files_that_cannot_be_read(tmp_path):
    from sidestep.data.audio import write_wav
    from sidestep.wizard import path_note

    for name in ("a.wav", "b.wav"):
        write_wav(tmp_path / "songs" / name, torch.zeros(2, 48000 * 3))
    (tmp_path / "songs" / "broken.wav").write_bytes(b"RIFF, but not audio")
    (tmp_path / "songs" / "empty.flac").write_bytes(b"")
    problem, note = path_note("data.dataset_dir", str(tmp_path / "songs"))
    assert problem is None and note.startswith("2 songs, 0.1 min of audio") and "2 more cannot be read" in note
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.wav").write_bytes(b"RIFF, but not audio")
    problem, _ = path_note("data.dataset_dir", str(tmp_path / "bad"))
    assert problem == f"data.dataset_dir: none of the 1 audio files in {tmp_path / 'bad'} can be read"


def test_what_was_typed_while_an_answer_was_checked_does_not_answer_the_next_question(monkeypatch):
    from sidestep.ui import questions

    master, slave = os.openpty()
    terminal = os.fdopen(slave, "r")
    monkeypatch.setattr(sys, "stdin", terminal)
    os.write(master, b"typed while the last answer was checked\n")

    def ask(prompt):  # the user reads the question, then answers it
        os.write(master, b"my answer\n")
        return terminal.readline()

    console = questions.Console(file=io.StringIO())
    monkeypatch.setattr(console, "input", ask)
    try:
        assert questions._read(console, questions.Question("adapter.rank", "Adapter rank"), "64", None, {}) == "my answer"
    finally:
        terminal.close()
        os.close(master)


def test_a_refusal_wraps_under_itself_and_never_splits_a_path():
    from rich.console import Console

    from sidestep.ui.questions import say

    out = io.StringIO()
    path = "/home/someone/music/a-very-long-folder-name-of-songs/that-goes-on-and-on/" + "x" * 30
    say(Console(file=out, width=60), f"data.dataset_dir: {path} is not a folder; point it at your tensors", "red")
    lines = out.getvalue().splitlines()
    assert len(lines) > 1 and lines[0].startswith("  data.dataset_dir:")
    assert all(line.startswith(" " * len("  data.dataset_dir: ")) for line in lines[1:])
    assert any(path in line for line in lines)


def test_training_the_wizard_starts_asks_nothing_more(tmp_path, monkeypatch):
    """Issue 27: after "Start training now? y" the run asked "Start training?" again, minutes of preprocessing later."""
    from omegaconf import OmegaConf

    from sidestep.config.schema import UIConfig

    command = ["python", "-m", "sidestep.train", "experiment=jazz"]
    monkeypatch.setattr("sidestep.wizard.set_up", lambda *a: (tmp_path / "jazz.yaml", command,
                                                              OmegaConf.structured(UIConfig)))
    monkeypatch.setattr("sidestep.wizard.is_interactive", lambda: True)
    monkeypatch.setattr("sidestep.wizard.Confirm.ask", lambda *a, **k: True)
    started = []
    monkeypatch.setattr("sidestep.wizard.become", started.append)
    main([])
    assert started == [["-m", "sidestep.train", "experiment=jazz", "ui.yes=true"]]


def test_ctrl_c_at_a_question_ends_its_line_before_the_interrupted_line(monkeypatch):
    """Issue 27: Ctrl-C at a question left `Dataset folder (data.dataset_dir): ^Cinterrupted` on one line; the
    prompt's line is ended, so "interrupted" stands on its own."""
    from rich.console import Console

    from sidestep.ui import questions

    def ctrl_c(*_):
        raise KeyboardInterrupt

    out = io.StringIO()
    monkeypatch.setattr("builtins.input", ctrl_c)
    monkeypatch.setattr(questions, "discard_typed_ahead", lambda _: None)
    question = questions.Question("data.dataset_dir", "Dataset folder")
    with pytest.raises(KeyboardInterrupt):
        questions._read(Console(file=out, width=80), question, None, None, {})
    assert out.getvalue().endswith("Dataset folder (data.dataset_dir): \n"), repr(out.getvalue())
