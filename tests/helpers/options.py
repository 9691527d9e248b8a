"""The options of a config group, read from `conf/<group>/`, so that a test over every optimizer or adapter type
covers a new one without being edited."""

from typing import List

from tests.helpers.configs import ROOT

CONF = ROOT / "conf"


def options(group: str) -> List[str]:
    """`conf/<group>/<name>.yaml` -> the names, sorted (what `<group>=<name>` chooses)."""
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))
