"""Print the README's list of every option of each config group (`conf/<group>/`): what the option is (its YAML's
comment), the knobs every option of the group shares and those of each option, with their defaults and the schema's
comment, so the docs list exactly what the schemas and `conf/` hold.

    python scripts/option_lists.py           # every group's list, as the README carries them
    python scripts/option_lists.py --write   # rewrite the lists in README.md (between <!-- options:GROUP --> markers)

tests/test_docs.py checks the README carries this output verbatim, one marked block per group.
"""

import inspect
import re
import sys
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional

from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf

from sidestep.config import as_container, flatten, register_schemas

ROOT = Path(__file__).resolve().parents[1]
CONF, README = ROOT / "conf", ROOT / "README.md"
NOT_LISTED = ("hydra", "_shared", "experiment", "hparams_search")  # Hydra's own, included pieces, their own tables
SKIPPED = ("hydra.", "run.name")  # not training settings
WIDEST = 80  # a longer value is shown as its size


def groups() -> List[str]:
    return sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in NOT_LISTED and list(p.glob("*.yaml")))


@lru_cache(maxsize=None)
def composed(*overrides: str, with_hydra: bool = False) -> DictConfig:
    register_schemas()
    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=with_hydra)


def is_global(group: str) -> bool:
    return any(line.strip() == "# @package _global_" for path in (CONF / group).glob("*.yaml")
               for line in path.read_text().splitlines())


def what_it_is(group: str, option: str) -> str:
    """The YAML's leading comment, without its package line and example commands."""
    lines = []
    for line in (CONF / group / f"{option}.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text and not text.startswith(("@package", "python -m")):
            lines.append(text)
    return " ".join(lines)


@lru_cache(maxsize=None)
def field_comments(schema: type) -> Dict[str, str]:
    """`name: type = default  # comment` lines of a dataclass and its bases -> {name: comment}."""
    comments: Dict[str, str] = {}
    for cls in reversed(schema.__mro__[:-1]):
        for match in re.finditer(r"^    (\w+): [^\n]*?  # ([^\n]*)$", inspect.getsource(cls), re.M):
            comments[match.group(1)] = match.group(2)
    return comments


def comment(node: DictConfig, key: str) -> str:
    """The schema's comment on a dotted key of a group's node ('' where the schema has none)."""
    *path, name = key.split(".")
    for part in path:
        node = node[part]
    schema = OmegaConf.get_type(node)
    return field_comments(schema).get(name, "") if schema is not None and schema is not dict else ""


def knobs(node: DictConfig, prefix: str = "") -> Dict[str, object]:
    """A group's node as `{dotted key: value}`, down to the schema's typed nodes (an untyped dict, such as the tiny
    model's stack, is one value), without Hydra's `_target_`/`_partial_` and unset (`???`) values."""
    values: Dict[str, object] = {}
    for key in node:
        if str(key).startswith("_") or OmegaConf.is_missing(node, key):
            continue
        child = node[key]
        if isinstance(child, DictConfig) and OmegaConf.get_type(child) not in (dict, None):
            values.update(knobs(child, f"{prefix}{key}."))
        else:
            values[f"{prefix}{key}"] = OmegaConf.to_container(child, resolve=True, enum_to_str=True) \
                if OmegaConf.is_config(child) else child.value if isinstance(child, Enum) else child
    return values


def shown(value) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, list):
        text = "[" + ", ".join(map(str, value)) + "]"
    else:
        text = str(value)
    if len(text) <= WIDEST:
        return text
    return f"{len(value)} values" if isinstance(value, list) else "{...}"


def knob(group: str, node: DictConfig, key: str, value) -> str:
    note = comment(node, key)
    return f"`{group}.{key}` = `{shown(value)}`" + (f" ({cell(note)})" if note else "")


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def natural(name: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def options(group: str) -> List[str]:
    return sorted((p.stem for p in (CONF / group).glob("*.yaml")), key=natural)


def common_schema(nodes) -> type:
    """The nearest dataclass every option's schema derives from (the group's base schema)."""
    schemas = [OmegaConf.get_type(node) for node in nodes]
    return next(cls for cls in schemas[0].__mro__ if all(issubclass(s, cls) for s in schemas))


def group_list(group: str) -> str:
    """One group's list: its default, the knobs of its base schema, then a row per option with what it adds or
    sets otherwise."""
    if is_global(group):
        return global_group_list(group)
    default: Optional[str] = composed(with_hydra=True).hydra.runtime.choices.get(group)
    nodes = {option: composed(f"{group}={option}")[group] for option in options(group)}
    base_node = OmegaConf.structured(common_schema(nodes.values()))
    base = knobs(base_node)
    lines = [f"`{group}=`: " + ", ".join(f"`{o}`" + (" (default)" if o == default else "") for o in nodes) + "."]
    if base:
        lines.append("Every option's knobs, at the schema's defaults: " + "; ".join(knob(group, base_node, k, v) for k, v in base.items()) + ".")
    lines += ["", "| option | what it is | what it sets or adds |", "|---|---|---|"]
    for option, node in nodes.items():
        own = [knob(group, node, key, value) for key, value in knobs(node).items()
               if key not in base or base[key] != value]
        lines.append(f"| `{option}` | {cell(what_it_is(group, option))} | {'; '.join(own) or 'nothing else'} |")
    return "\n".join(lines)


def global_group_list(group: str) -> str:
    """A preset group (`# @package _global_`): each option's group choices and keys that differ from the defaults."""
    base, choices = flatten(as_container(composed())), composed(with_hydra=True).hydra.runtime.choices
    lines = [f"`{group}=`: " + ", ".join(f"`{o}`" for o in options(group)) + " (none by default).", "",
             "| option | what it is | what it sets |", "|---|---|---|"]
    for option in options(group):
        chosen = composed(f"{group}={option}", with_hydra=True).hydra.runtime.choices
        sets = [f"`{g}={chosen[g]}`" for g in groups() if g != group and chosen.get(g) != choices.get(g)]
        sets += [f"`{key}` = `{shown(value)}`" for key, value in flatten(as_container(composed(f"{group}={option}"))).items()
                 if value != base.get(key) and not key.startswith(SKIPPED) and "._" not in key]
        lines.append(f"| `{option}` | {cell(what_it_is(group, option))} | {'; '.join(sets)} |")
    return "\n".join(lines)


def marked(group: str) -> str:
    return f"<!-- options:{group} -->\n{group_list(group)}\n<!-- /options:{group} -->"


def write_readme() -> None:
    text = README.read_text()
    for group in groups():
        pattern = re.compile(rf"<!-- options:{group} -->\n(?:.*?\n)?<!-- /options:{group} -->", re.S)
        if not pattern.search(text):
            sys.exit(f"README.md has no <!-- options:{group} --> block: add one where the group is described")
        text = pattern.sub(lambda _: marked(group), text)
    README.write_text(text)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write_readme()
    else:
        print("\n\n".join(marked(group) for group in groups()))
