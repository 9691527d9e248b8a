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
    spec = importlib.util.spec_from_file_location("preset_table", ROOT / "scripts" / "preset_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (ROOT / "README.md").read_text()
    shown = re.search(rf"<!-- {marker} -->\n(.*?)\n<!-- /{marker} -->", readme, re.S).group(1)
    assert shown == getattr(module, function)()


def test_packaging_lists_every_subpackage():
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = {".".join(p.parent.relative_to(ROOT / "src").parts) for p in (ROOT / "src").rglob("__init__.py")}
    assert set(packages) == found | {"sidestep.conf"}
