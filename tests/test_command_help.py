"""Every entry point answers `--help` with what it does and its common options (type, choices, default from the
schema), without Hydra's config dump and without loading torch."""

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from sidestep.ui.help import help_text, option_rows

ENTRY_POINTS = ("train", "preprocess", "sample", "estimate", "export", "wizard", "monitor", "rerun", "report", "tiny",
               "analyze", "tags")

PROBE = """
import contextlib, importlib, io, runpy, sys
for name in sys.argv[1:]:
    sys.argv = [name, "--help"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_module(f"sidestep.{name}", run_name="__main__")
        except SystemExit as done:
            assert done.code in (0, None), (name, done.code)
    assert out.getvalue().startswith("usage: python -m sidestep." + name), (name, out.getvalue()[:200])
    assert "_target_" not in out.getvalue() and "${" not in out.getvalue(), name
    assert "torch" not in sys.modules, f"sidestep.{name} --help loaded torch"
print("ok")
"""


def test_every_entry_point_answers_help_without_loading_torch():
    result = subprocess.run([sys.executable, "-c", PROBE, *ENTRY_POINTS], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]


@pytest.mark.parametrize("module, config_name", [("train", "train"), ("preprocess", "preprocess"),
                                                 ("sample", "sample"), ("estimate", "train"),
                                                 ("analyze", "analyze")])
def test_the_help_shows_the_default_each_option_really_has(module, config_name):
    help = __import__(f"sidestep.{module}", fromlist=["HELP"]).HELP
    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        cfg = compose(config_name=config_name)
    for key, _, shown, _ in option_rows(help):
        if shown == "computed":  # run.name: an interpolation, described in words
            continue
        value = OmegaConf.select(cfg, key)
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        expected = ("null" if value is None else str(value).lower() if isinstance(value, bool)
                    else "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else str(value))
        assert shown == expected, key
    assert len(help_text(help).splitlines()) < 60


def test_train_help_names_choices_and_where_the_full_list_is():
    from sidestep.train import HELP

    text = help_text(HELP)
    assert "trainer.precision     auto|bf16|fp16|fp32" in text
    assert "adapter     lora (default), dora, loha, lokr, oft" in text
    assert "--cfg job" in text and "schema.py" in text


def test_a_command_given_no_folder_names_only_what_is_missing(capsys):
    """Issue 27: `python -m sidestep.monitor` alone said "the following arguments are required: dir, settings",
    and settings (ui.plain=true) are optional. Only the folder is asked for."""
    from sidestep import monitor

    with pytest.raises(SystemExit) as stopped:
        monitor.parse_args([])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith("the following arguments are required: dir"), error


def test_tags_help_says_what_the_command_does(capsys):
    """Issue 27: `sidestep.tags --help` described itself with half of its docstring's first sentence, a
    back-quoted usage line ending in a colon, and never said what it does."""
    from sidestep import tags

    with pytest.raises(SystemExit):
        tags.main(["--help"])
    description = capsys.readouterr().out.split("\n\n")[1]
    assert "`" not in description and "trigger tags" in description, description


@pytest.mark.parametrize("module", ["train", "preprocess", "sample", "estimate", "analyze"])
def test_help_speaks_of_settings_not_of_the_code(module):
    """Issue 27: `--help` said `adapter.alpha ... null: ALPHA_PER_RANK (2) x rank (resolved by `prepare`)`: a constant's
    and a function's names from the schema's comments. Each option's meaning is in the user's words."""
    import re

    help = __import__(f"sidestep.{module}", fromlist=["HELP"]).HELP
    for key, _, _, meaning in option_rows(help):
        assert not re.search(r"\b[A-Z]+_[A-Z_]+\b|resolved by", meaning), (key, meaning)
