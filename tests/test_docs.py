"""The docs say what the code does: the README's preset tables are the ones generated from conf/."""

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("marker, function", [("preset-table", "table"), ("experiment-table", "experiment_table"),
                                              ("adapter-size-table", "adapter_size_table"),
                                              ("model-fit-table", "model_fit_table")])
def test_readme_preset_tables_match_the_config_files(marker, function):
    module = script("preset_table")
    readme = (ROOT / "README.md").read_text()
    shown = re.search(rf"<!-- {marker} -->\n(.*?)\n<!-- /{marker} -->", readme, re.S).group(1)
    assert shown == getattr(module, function)()


def script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OPTION_LISTS = script("option_lists")


@pytest.mark.parametrize("group", OPTION_LISTS.groups())
def test_readme_lists_every_option_of_each_group_as_the_schemas_give_them(group):
    """A new option, knob, default or comment changes the list; `python scripts/option_lists.py --write` updates it."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(rf"<!-- options:{group} -->\n.*?<!-- /options:{group} -->", readme, re.S)
    assert block, f"README.md has no <!-- options:{group} --> list: add the markers, then run scripts/option_lists.py --write"
    assert block.group(0) == OPTION_LISTS.marked(group), "stale: run python scripts/option_lists.py --write"


def test_packaging_lists_every_subpackage():
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = {".".join(p.parent.relative_to(ROOT / "src").parts) for p in (ROOT / "src").rglob("__init__.py")}
    assert set(packages) == found | {"sidestep.conf"}
