"""The new-run form, generated from the typed schema (`config/schema.py`, `config/parts.py`, `config/choices.py`):
each knob's type, its closed set of values, its default and the comment that explains it, so a new knob appears
on the page without touching the studio."""

import dataclasses
import enum
import inspect
import re
import typing
from pathlib import Path
from typing import Dict, List, Optional

from omegaconf import MISSING, OmegaConf

import sidestep.conf
from sidestep.config.overrides import group_options
from sidestep.config.schema import CHOSEN_BY_TARGET, TrainConfig

GROUP_ORDER = ("experiment", "model", "adapter", "optimizer", "vram", "scheduler", "attention", "timesteps", "data",
               "hparams_search")
HIDDEN = ("ui", "resume_from", "resume")  # how the terminal looks, and what the run page's resume button sets
_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+)$")


def conf_dir() -> Path:
    return Path(sidestep.conf.__file__).parent


def groups() -> List[dict]:
    """Each config group with its options and the one `conf/train.yaml` picks."""
    options = group_options(conf_dir())
    chosen = {}
    for entry in OmegaConf.load(conf_dir() / "train.yaml").defaults:
        if isinstance(entry, dict) or OmegaConf.is_dict(entry):
            chosen.update({str(k): v for k, v in dict(entry).items()})
    return [{"name": name, "options": options[name], "default": chosen.get(name)}
            for name in GROUP_ORDER if name in options]


def group_choices(group: str) -> List[str]:
    return group_options(conf_dir())[group]


def fields() -> List[dict]:
    """Every knob a run can set, in schema order; `only` names the option of a group a field belongs to."""
    found: List[dict] = []
    hints = typing.get_type_hints(TrainConfig)
    for node in dataclasses.fields(TrainConfig):
        if node.name in HIDDEN:
            continue
        if node.name in CHOSEN_BY_TARGET:
            for option, schema in CHOSEN_BY_TARGET[node.name].items():
                found += _fields_of(schema, f"{node.name}.", {"group": node.name, "option": option})
        else:
            schema = _inner(hints[node.name])
            if dataclasses.is_dataclass(schema):
                found += _fields_of(schema, f"{node.name}.", None)
    return found


def _fields_of(schema: type, prefix: str, only: Optional[dict]) -> List[dict]:
    result = []
    hints, comments = typing.get_type_hints(schema), _comments(schema)
    for item in dataclasses.fields(schema):
        if item.name.startswith("_"):
            continue
        kind = _inner(hints[item.name])
        if dataclasses.is_dataclass(kind):
            result += _fields_of(kind, f"{prefix}{item.name}.", only)
            continue
        described = _describe(kind)
        if described is None:  # a free-form dict or a list of records: the command line's business
            continue
        result.append({"key": prefix + item.name, **described, "default": _default(item), "only": only,
                       "help": comments.get(item.name, "")})
    return result


def _inner(hint):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint


def _describe(kind) -> Optional[dict]:
    if typing.get_origin(kind) in (list, List):
        item = typing.get_args(kind)[0]
        if isinstance(item, type) and issubclass(item, enum.Enum):
            return {"kind": "list", "choices": [m.value for m in item]}
        return {"kind": "list", "choices": None} if item in (int, float, str) else None
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return {"kind": "choice", "choices": [m.value for m in kind]}
    names = {bool: "bool", int: "int", float: "float", str: "str"}
    return {"kind": names[kind], "choices": None} if kind in names else None


def _default(item: dataclasses.Field):
    value = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
    if value is dataclasses.MISSING or value is MISSING:
        return None
    if isinstance(value, list):
        return [v.value if isinstance(v, enum.Enum) else v for v in value]
    return value.value if isinstance(value, enum.Enum) else value


def _comments(schema: type) -> Dict[str, str]:
    """{field: the comment after it in the source}, base classes first so a subclass's own comment wins."""
    comments: Dict[str, str] = {}
    for cls in reversed(schema.__mro__):
        if dataclasses.is_dataclass(cls):
            for line in inspect.getsource(cls).splitlines():
                match = _COMMENT.match(line)
                if match:
                    comments[match.group(1)] = match.group(2).strip()
    return comments
