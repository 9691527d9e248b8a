"""Every `python -m sidestep.<command> ...` line of the README's bash blocks is checked the way its command checks
its arguments, without training: the config commands' overrides are checked and composed against the schema, the
other commands' flags and choices against their own `--help`. And the README says how to get `python` first."""

import contextlib
import io
import re
import shlex

import pytest
from hydra import compose, initialize_config_module

from sidestep.config.overrides import check_overrides, path_argument
from sidestep.user_config import user_config_dir
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
CONF = (ROOT / "conf")
HYDRA_APPS = {"train": "train", "estimate": "train", "wizard": "train", "preprocess": "preprocess", "sample": "sample",
              "analyze": "analyze"}
PLACEHOLDERS = [(r"<same overrides>", ""), (r"\$PWD", "/tmp"), (r"<[^>]+>", "placeholder"), (r" \.\.\.(?= |$)", "")]


def readme_commands():
    """(line, command, its arguments) for each `python -m sidestep.X` line of a bash block."""
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.splitlines():
            text = line
            for pattern, value in PLACEHOLDERS:
                text = re.sub(pattern, value, text)
            words = shlex.split(text, comments=True)
            for i in range(len(words) - 1):
                if words[i] == "-m" and words[i + 1].startswith("sidestep."):
                    args = words[i + 2:]
                    args = args[:args.index(">")] if ">" in args else args
                    yield line, words[i + 1][len("sidestep."):], args


COMMANDS = list(readme_commands())


def without_flags(args, flags):
    """`args` without each `FLAG VALUE` pair of `flags` (Side-Step's own flags, taken before Hydra sees the rest)."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in flags:
            skip = True
        elif not arg.startswith(tuple(f + "=" for f in flags)):
            kept.append(arg)
    return kept


def first_values(override: str) -> str:
    """A sweep override (`adapter.rank=4,8`) as one run of it (`adapter.rank=4`), for composing."""
    key, _, value = override.partition("=")
    return f"{key}={value.split(',')[0]}" if "," in value and not value.startswith("[") else override


@pytest.fixture(scope="module", autouse=True)
def a_wizard_recipe():
    """`experiment=<name>`: a recipe the wizard wrote, in the user's config folder (the tests' own)."""
    recipe = user_config_dir() / "experiment" / "placeholder.yaml"
    recipe.parent.mkdir(parents=True, exist_ok=True)
    recipe.write_text("# @package _global_\nadapter:\n  rank: 8\n")
    yield
    recipe.unlink(missing_ok=True)  # a test that empties the user's config folder may have taken it


@pytest.mark.parametrize("line, command, args", COMMANDS, ids=[c[0].strip()[:80] for c in COMMANDS])
def test_each_readme_command_checks_out(line, command, args):
    if command in HYDRA_APPS:
        if "--config-path" in args:  # Hydra's own way to rerun a saved config: no config of ours to check
            assert args[args.index("--config-name") + 1] == "config"
            return
        args = without_flags(args, ("--allow-target",))
        if "--config-dir" in args:  # the user's own config folder: its options are not ours to compose
            return
        if command == "sample":
            args = path_argument("source", ["sample", *args])[1:]
        if command == "analyze":
            args = path_argument("songs_dir", ["analyze", *args])[1:]
        overrides = [a for a in args if "=" in a and not a.startswith("-")]
        assert all(a in ("-m",) or "=" in a for a in args), line  # no stray flag Hydra would refuse
        if HYDRA_APPS[command] == "train":
            check_overrides(overrides, CONF)
        for override in overrides:
            if override.startswith("hydra/"):  # a Hydra plugin's group: its option must be shipped
                group, option = override.split("=")
                assert (CONF / group / f"{option}.yaml").is_file(), line
        with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
            compose(config_name=HYDRA_APPS[command],
                    overrides=[first_values(o) for o in overrides if not o.startswith(("hydra.", "hydra/"))])
        return
    if command == "rerun":
        check_overrides(args[1:], CONF)
        return
    module = __import__(f"sidestep.{command}", fromlist=["main"])
    if not hasattr(module, "main"):  # a package's entry point (report, studio)
        module = __import__(f"sidestep.{command}.__main__", fromlist=["main"])
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown), pytest.raises(SystemExit):
        module.main(["--help"])
    help_text = shown.getvalue()
    for i, arg in enumerate(args):
        if arg.startswith("--"):
            assert arg in help_text, f"{line}: {arg} is not one of its flags"
            choices = re.search(re.escape(arg) + r" \{([^}]+)\}", help_text)
            if choices:
                assert args[i + 1] in choices.group(1).split(","), line


def test_the_readme_says_how_to_get_the_environments_python_before_its_first_bare_python():
    first_bare = README.index("python -m sidestep.", README.index(".venv/bin/python -m sidestep.train") + 40)
    assert "source .venv/bin/activate" in README[:first_bare]
    assert ".venv\\Scripts\\activate" in README[:first_bare]
    assert len(COMMANDS) > 30
    assert {c for _, c, _ in COMMANDS} >= {"train", "preprocess", "sample", "export", "estimate", "wizard", "monitor",
                                             "report", "rerun", "tiny"}
