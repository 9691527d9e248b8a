"""`--help` of the Hydra entry points: what the command does and its common options, each with its type, choices and
default read from the schema (and the default group option's YAML), instead of Hydra's dump of the whole config.

Nothing here imports torch or composes a config, so every command answers `--help` at once.
"""

import dataclasses
import inspect
import re
import sys
import typing
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from omegaconf import MISSING, OmegaConf

import sidestep.conf
from sidestep.config.schema import CHOSEN_BY_TARGET

HELP_FLAGS = ("-h", "--help")
CONF = Path(sidestep.conf.__file__).parent


@dataclasses.dataclass(frozen=True)
class CommandHelp:
    command: str  # `python -m sidestep.train`
    usage: str  # what follows the command
    about: str  # what it does, in a sentence or two
    schema: type  # the dataclass of its config
    config_name: str  # its YAML in conf/ (the defaults list says which group option is the default)
    options: Tuple[str, ...]  # the common keys, in the order shown
    groups: Tuple[str, ...] = ()  # config groups worth choosing from the command line
    more: str = ""  # where the full list is


def answer_help(argv: Sequence[str], help: Union[CommandHelp, str]) -> None:
    """`-h` / `--help` anywhere on the command line: print the short help (or the text given) and exit 0."""
    if any(arg in HELP_FLAGS for arg in argv):
        print(help_text(help) if isinstance(help, CommandHelp) else help)
        sys.exit(0)


def usage_and_about(usage: str, docstring: str) -> str:
    """A plain command's help: its usage line, then its module docstring after the command's own usage."""
    about = docstring.split(": ", 1)[1]
    return f"usage: {usage}\n\n{about[0].upper()}{about[1:]}".rstrip()


def help_text(help: CommandHelp) -> str:
    defaults = _default_options(help.config_name)
    lines = [f"usage: {help.command} {help.usage}", "", help.about, ""]
    if help.groups:
        lines.append("Choose a config group with group=option (the default first):")
        width = max(map(len, help.groups))
        for group in help.groups:
            options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
            first = defaults.get(group)
            shown = [f"{first} (default)"] * (first is not None) + [o for o in options if o != first]
            lines.append(f"  {group:<{width}}  {', '.join(shown)}")
        lines.append("")
    lines.append("Common options, key=value:")
    rows = [("key", "type", "default", "")] + option_rows(help)
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        lines.append(("  " + "  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)) + f"  {row[3]}").rstrip())
    if help.more:
        lines += ["", help.more]
    return "\n".join(lines)


def option_rows(help: CommandHelp) -> List[Tuple[str, str, str, str]]:
    """(key, type, default, what it means) of each common option."""
    defaults = _default_options(help.config_name)
    return [_describe(key, help.schema, defaults) for key in help.options]


def _default_options(config_name: str) -> Dict[str, Optional[str]]:
    """{group: its default option} from the defaults list of `conf/<config_name>.yaml`."""
    entries = OmegaConf.to_container(OmegaConf.load(CONF / f"{config_name}.yaml")).get("defaults", [])
    return {k: v for e in entries if isinstance(e, dict) for k, v in e.items() if not k.startswith("override")}


def _describe(key: str, schema: type, defaults: Dict[str, Optional[str]]) -> Tuple[str, str, str, str]:
    """(key, type, default, the schema's comment on the field)."""
    group, *rest = key.split(".")
    cls, kind, value = schema, None, None
    option = defaults.get(group)
    if rest and option is not None and group in CHOSEN_BY_TARGET and option in CHOSEN_BY_TARGET[group]:
        cls = CHOSEN_BY_TARGET[group][option]  # the default option's own schema (adamw's lr, not the base's)
        parts = rest
    else:
        parts = key.split(".")
    comment = ""
    for i, part in enumerate(parts):
        fld = next(f for f in dataclasses.fields(cls) if f.name == part)
        comment = _comment(cls, part)
        kind = typing.get_type_hints(cls)[part]
        value = fld.default_factory() if fld.default_factory is not dataclasses.MISSING else fld.default
        if i + 1 < len(parts):
            cls = _dataclass_of(kind)
    yaml_value = _yaml_value(group, option, rest) if rest and option is not None else None
    value = yaml_value if yaml_value is not None else value
    return key, _type_name(kind), _value_text(value), comment


def _yaml_value(group: str, option: str, rest: List[str]) -> Any:
    path = CONF / group / f"{option}.yaml"
    return OmegaConf.select(OmegaConf.load(path), ".".join(rest)) if path.is_file() else None


def _dataclass_of(kind: Any) -> type:
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    return kind if dataclasses.is_dataclass(kind) else args[0]


def _type_name(kind: Any) -> str:
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) is typing.Union:
        return f"{_type_name(args[0])} or null"
    if typing.get_origin(kind) in (list, List):
        return f"list of {_type_name(args[0])}"
    if isinstance(kind, type) and issubclass(kind, Enum):
        return "|".join(m.value for m in kind)
    return getattr(kind, "__name__", str(kind))


def _value_text(value: Any) -> str:
    if value is None:
        return "null"
    if value is MISSING or value == MISSING:
        return "required"
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str) and "${" in value:
        return "computed"  # an interpolation: the comment says from what
    if isinstance(value, list):
        return "[" + ",".join(_value_text(v) for v in value) + "]"
    return str(value)


def _comment(cls: type, name: str) -> str:
    """The comment after a field in the schema's source: the schema says what a knob means, once."""
    for klass in cls.__mro__:
        if dataclasses.is_dataclass(klass):
            match = re.search(rf"^\s+{re.escape(name)}:[^\n#]*#\s*(.+)$", inspect.getsource(klass), re.MULTILINE)
            if match:
                return match.group(1).strip()
    return ""
