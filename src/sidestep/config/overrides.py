"""Command-line overrides checked against the schema before Hydra composes, so a typo gets one line with the
nearest real option (`optimizer.learning_rate` -> did you mean `optimizer.lr`?) instead of Hydra's error block."""

import dataclasses
import difflib
import re
import typing
from enum import Enum
from pathlib import Path
from typing import Dict, Iterable, List

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from sidestep.config.parts import ADAPTER_SCHEMAS, knobs_of
from sidestep.config.renamed_keys import renamed_overrides
from sidestep.config.schema import CHOSEN_BY_TARGET, TrainConfig
from sidestep.errors import ConfigError
from sidestep.user_config import user_config_dir

OPEN_NODES = ("model.tiny_stack.",)  # free-form dicts: any key below them is accepted
SYNONYMS = {"learning_rate": "lr", "learningrate": "lr", "steps": "max_steps", "batch": "batch_size",
            "grad_accum": "gradient_accumulation", "accumulation": "gradient_accumulation", "r": "rank",
            "lora_alpha": "alpha", "lora_dropout": "dropout", "warmup": "warmup_steps"}  # names other trainers use
CONFIG_DIR_FLAGS = ("-cd", "--config-dir", "-cp", "--config-path", "hydra.searchpath")
ADAPTER_SCHEMA_LINE = re.compile(r"/schema/adapter/(\w+)@")  # an adapter option's YAML extends its schema


def known_keys() -> Dict[str, type]:
    """{dotted key: its type} for every key of the training schema (any optimizer's or adapter's options
    included), and every node above one."""
    keys = _schema_keys(TrainConfig, "")
    for group, schemas in CHOSEN_BY_TARGET.items():
        for schema in schemas.values():
            keys.update(_schema_keys(schema, f"{group}."))
    return keys


def _schema_keys(schema: type, prefix: str) -> Dict[str, type]:
    keys = {}
    for name, hint in typing.get_type_hints(schema).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        inner = args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint
        keys[prefix + name] = inner
        if dataclasses.is_dataclass(inner):
            keys.update(_schema_keys(inner, f"{prefix}{name}."))
    return keys


def _check_choice(key: str, kind: type, value) -> None:
    """A value outside an enum-typed option's set, named with the set (Hydra would print a block)."""
    listed = typing.get_origin(kind) in (list, List)
    enum = typing.get_args(kind)[0] if listed else kind
    if not (isinstance(enum, type) and issubclass(enum, Enum)):
        return
    allowed = [m.value for m in enum]
    for item in value if isinstance(value, list) else [value]:
        if str(item) not in allowed:
            why = f" ({' '.join(enum.__doc__.split())})" if enum.__doc__ else ""
            raise ConfigError(f"{key}: {item!r} is not one of {', '.join(allowed)}{_nearest(str(item), allowed, '')}"
                              + why)


def group_options(*conf_dirs: Path) -> dict:
    """{group: [options]} of the config trees (`optimizer: [adafactor, adamw, ...]`), a missing one left out."""
    found: Dict[str, set] = {}
    for conf_dir in conf_dirs:
        for d in conf_dir.iterdir() if conf_dir.is_dir() else ():
            if d.is_dir() and d.name != "hydra" and not d.name.startswith("_"):
                found.setdefault(d.name, set()).update(p.stem for p in d.glob("*.yaml"))
    return {group: sorted(options) for group, options in found.items()}


def check_overrides(args: Iterable[str], conf_dir: Path) -> None:
    """Raise `ConfigError` for the first `key=value` naming no option, or `group=option` naming no option of its
    group, or an adapter knob the chosen `adapter=` type lacks. Old names (`lora.rank`) are taken as today's.
    Additions (`+key=`), deletions (`~key`) and `hydra.*` are Hydra's own business."""
    args = renamed_overrides(args, notify=False)
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return  # Hydra reports a malformed override itself
    keys, groups = known_keys(), group_options(conf_dir, user_config_dir())  # the user's recipes are options too
    extra_configs = any(a.startswith(CONFIG_DIR_FLAGS) for a in args)
    adapter = next((o.value() for o in parsed if o.key_or_group == "adapter" and not o.is_sweep_override()), "lora")
    for override in parsed:
        key = override.key_or_group
        if override.is_add() or override.is_delete() or key.startswith("hydra") or "/" in key:
            continue
        if key in groups:
            option = override.value()
            if isinstance(option, str) and option not in groups[key] and not extra_configs:
                raise ConfigError(f"{key}={option}: no such {key} option{_nearest(option, groups[key], f'{key}=')}; "
                                  f"choose from {', '.join(groups[key])}")
        elif key not in keys and not key.startswith(OPEN_NODES):
            raise ConfigError(f"{key}: no such option{_nearest(key, keys, '')}; "
                              "`python -m sidestep.train --cfg job` prints every option")
        elif key in keys and not override.is_sweep_override():
            _check_choice(key, keys[key], override.value())
        if key.startswith("adapter.") and not override.is_delete():
            _check_adapter_knob(key, str(adapter), conf_dir)


def _check_adapter_knob(key: str, option: str, conf_dir: Path) -> None:
    """`adapter=oft adapter.rank=16`: one line naming the knob and the type's own, before Hydra composes."""
    schema = None
    for folder in (conf_dir, user_config_dir()):
        path = folder / "adapter" / f"{option}.yaml"
        found = ADAPTER_SCHEMA_LINE.search(path.read_text(encoding="utf-8")) if path.is_file() else None
        schema = schema or (ADAPTER_SCHEMAS.get(found.group(1)) if found else None)
    leaf = key.split(".")[1]
    if schema is not None and leaf not in knobs_of(schema):
        own = [f for f in knobs_of(schema) if not f.startswith("_")]
        raise ConfigError(f"{key}: adapter={option} has no {leaf}; its knobs are adapter.{', adapter.'.join(own)}")


def _nearest(word: str, choices: Iterable[str], prefix: str) -> str:
    """` (did you mean X?)` for the closest choice: a usual synonym, then a leaf of the same node, then any key.
    Case does not count (`adamW` is `adamw`)."""
    choices = sorted(choices)
    node, _, leaf = word.rpartition(".")
    same_node = {c.rpartition(".")[2]: c for c in choices if c.rpartition(".")[0].lower() == node.lower()}
    guesses = [SYNONYMS[leaf.lower()]] if SYNONYMS.get(leaf.lower()) in same_node else []
    guesses += _close(leaf, list(same_node))
    match: List[str] = [same_node[g] for g in guesses] + _close(word, choices)
    return f" (did you mean {prefix}{match[0]}?)" if match else ""


def _close(word: str, choices: List[str]) -> List[str]:
    """difflib's closest match, ignoring case (the choice comes back as it is spelled)."""
    by_lower = {c.lower(): c for c in choices}
    return [by_lower[m] for m in difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.5)]


def path_argument(key: str, argv: List[str]) -> List[str]:
    """`command PATH key=value ...` -> `command key='PATH' key=value ...`: a command's folder given first, as Hydra
    takes only key=value (sample's `source`, analyze's `songs_dir`)."""
    first = argv[1] if len(argv) > 1 else None
    if first is None or "=" in first or first.startswith("-"):
        return argv
    return [argv[0], f"{key}='{Path(first).expanduser().resolve().as_posix()}'", *argv[2:]]
