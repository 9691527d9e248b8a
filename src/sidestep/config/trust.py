"""What a config read from disk may hold: data, never code.

A run folder's `.hydra/config.yaml`, its `overrides.yaml`, an `experiment=` recipe or a `--config-path` config may
come from someone else, as a LoRA does. Hydra builds whatever a `_target_` names, its resolvers run when a value
is read, and a `hydra:` section can name callbacks, logging factories and launcher shell lines. So every such
file is vetted here before anything in it is read, built or resolved:

- a `_target_` may sit only at the root of a group that builds a part (`model`, `optimizer`, `adapter`, `scheduler`,
  `data`) and must name one that Side-Step ships (read from the schema and `conf/`), or one the user allowed for
  this command with `--allow-target NAME`;
- a saved record holds resolved values: no `${...}` at all, except in the run-dir patterns the app writes there;
- a recipe may refer to other keys (`${adapter.rank}`) and use `${now:...}`, no other resolver;
- of `hydra:`, a file may set only the run and sweep dirs, `job.chdir`, the search path and the sweeper's search
  settings; callbacks, logging, launchers (their `setup` lines are shell) and environment variables come from the
  command line or from Side-Step's own `conf/`.
"""

import dataclasses
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, FrozenSet, Iterable, List, Set, Tuple

from omegaconf import DictConfig, ListConfig, OmegaConf

import sidestep.conf
from sidestep.config.parts import ADAPTER_SCHEMAS, OPTIMIZER_SCHEMAS, SCHEDULER_SCHEMAS, DataConfig, ModelConfig
from sidestep.config.schema import TrainConfig
from sidestep.errors import ConfigError

CONF_DIR = Path(sidestep.conf.__file__).parent
PART_GROUPS = tuple(f.name for f in dataclasses.fields(TrainConfig)  # the groups that build a part: model, optimizer...
                    if dataclasses.is_dataclass(f.type) and "_target_" in {g.name for g in dataclasses.fields(f.type)})
ALLOW_FLAG = "--allow-target"
ALLOW_ENV = "SIDESTEP_ALLOW_TARGETS"  # what --allow-target sets, so the jobs of a sweep see it too
RECIPE_RESOLVERS = ("now",)  # a recipe may stamp a time; every other resolver reads or writes outside the config
# Of `hydra:`, what a file from disk may set (prefixes of dotted keys); the rest runs or imports what it names.
HYDRA_KEYS = ("hydra.run.", "hydra.sweep.", "hydra.job.chdir", "hydra.searchpath", "hydra.sweeper.direction",
              "hydra.sweeper.study_name", "hydra.sweeper.storage", "hydra.sweeper.n_trials", "hydra.sweeper.n_jobs",
              "hydra.sweeper.max_failure_rate", "hydra.sweeper.params.", "hydra.sweeper.sampler.seed")
SWEEP_PARAMS = "hydra.sweeper.params."  # each is a command-line override of every job: Hydra's own keys stay out
RUN_DIR_KEYS = ("hydra.run.", "hydra.sweep.")  # where a saved record keeps the app's own `${now:}` patterns
_RESOLVER = re.compile(r"\$\{\s*([^${}:\s]+)\s*:")


@lru_cache(maxsize=None)
def shipped_targets() -> Dict[str, FrozenSet[str]]:
    """{part group: every `_target_` Side-Step ships for it}: the schema's defaults and the group's options in
    `conf/`."""
    found: Dict[str, Set[str]] = {group: set() for group in PART_GROUPS}
    found["model"].add(ModelConfig._target_)
    found["data"].add(DataConfig._target_)
    found["optimizer"] |= {schema._target_ for schema in OPTIMIZER_SCHEMAS.values()}
    found["adapter"] |= {schema._target_ for schema in ADAPTER_SCHEMAS.values()}
    found["scheduler"] |= {schema._target_ for schema in SCHEDULER_SCHEMAS.values()}
    for group in PART_GROUPS:
        for path in (CONF_DIR / group).glob("*.yaml"):
            target = OmegaConf.load(path).get("_target_")
            if isinstance(target, str):
                found[group].add(target)
    return {group: frozenset(targets) for group, targets in found.items()}


@lru_cache(maxsize=None)
def _run_dir_resolvers() -> FrozenSet[str]:
    """The resolvers the app's own run and sweep dir patterns call (a saved record carries them, see saved.py)."""
    app = OmegaConf.load(CONF_DIR / "train.yaml").hydra
    text = OmegaConf.to_yaml(OmegaConf.create({"run": app.run, "sweep": app.sweep}))
    return frozenset(_RESOLVER.findall(text))


def user_allowed() -> FrozenSet[str]:
    """What `--allow-target` allowed for this command."""
    return frozenset(t.strip() for t in os.environ.get(ALLOW_ENV, "").split(",") if t.strip())


def take_allow_flags(argv: List[str]) -> List[str]:
    """`argv` without its `--allow-target NAME` (or `--allow-target=NAME`) pairs, which go to `SIDESTEP_ALLOW_TARGETS`
    for this process and its sweep jobs."""
    rest, names = [], []
    args = iter(argv)
    for arg in args:
        if arg == ALLOW_FLAG:
            names.append(next(args, ""))
        elif arg.startswith(ALLOW_FLAG + "="):
            names.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    allow_targets(names)
    return rest


def allow_targets(names: List[str]) -> None:
    """Let this command (and its sweep jobs) build these `_target_`s too."""
    if any(not n or "," in n for n in names):
        raise ConfigError(f"{ALLOW_FLAG}: give one dotted name of a class or function per flag, e.g. {ALLOW_FLAG} "
                          "mypkg.sources.MySource")
    if names:
        os.environ[ALLOW_ENV] = ",".join(filter(None, [os.environ.get(ALLOW_ENV, ""), *names]))


def check_target(key: str, value: Any) -> None:
    """`key` (dotted, ending in `_target_`) may name `value`: a part's root, a shipped or allowed target."""
    node = key.rpartition(".")[0]
    if node not in PART_GROUPS:
        raise ConfigError(f"{key}: {value!r}: only {', '.join(g + '._target_' for g in PART_GROUPS)} may name what "
                          "is built; a config never builds anything nested")
    if not isinstance(value, str) or value not in shipped_targets()[node] | user_allowed():
        raise ConfigError(f"{key}: {value!r} is not a {node} Side-Step ships; if you trust it, allow it for this "
                          f"command with {ALLOW_FLAG} {value}")


def check_built_targets(cfg: DictConfig) -> None:
    """A composed config (command line included): every `_target_` at a part's root, shipped or allowed."""
    for key, value in _leaves(OmegaConf.to_container(cfg, resolve=False), ""):
        if key.rpartition(".")[2] == "_target_":
            check_target(key, value)


def vet_file(node: Any, where: str, package: str = "", record: bool = False) -> None:
    """Refuse (one `ConfigError` naming `where`, the key and the value) what a config file from disk may not hold.
    `package` is where the file's keys land (`model` for a file of the model group); `record`: a run's saved
    `.hydra/` files, which hold resolved values."""
    container = OmegaConf.to_container(node, resolve=False) if isinstance(node, (DictConfig, ListConfig)) else node
    try:
        for key, value in _leaves(container, package):
            _vet_leaf(key, value, record)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def vet_override(override: str, where: str) -> None:
    """One `key=value` of a saved `overrides.yaml`, which becomes a command line: as a record's value."""
    key, _, value = override.partition("=")
    key = key.lstrip("+~")
    if key.startswith("hydra.") or key.startswith("hydra/"):
        raise ConfigError(f"{where}: {key}: a saved run may not set Hydra's own settings ({value!r})")
    vet_file(_nested(key, value), where, record=True)


def _nested(key: str, value: Any) -> dict:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def _vet_leaf(key: str, value: Any, record: bool) -> None:
    leaf = key.rpartition(".")[2]
    if leaf == "()":
        raise ConfigError(f"{key}: {value!r}: a config file may not name a factory to call")
    if key.startswith("hydra.") and not key.startswith(HYDRA_KEYS):
        raise ConfigError(f"{key}: {value!r}: a config file may not set this Hydra setting (it runs or imports what "
                          "it names); give it on the command line")
    if key.startswith(SWEEP_PARAMS) and key[len(SWEEP_PARAMS):].lstrip("+~").startswith(("hydra.", "hydra/")):
        raise ConfigError(f"{key}: {value!r}: a sweep in a config file may vary only training keys, not Hydra's own "
                          "settings (environment, logging, callbacks)")
    if key.startswith("hydra.searchpath") and isinstance(value, str) and value.startswith("pkg://") \
            and value != "pkg://sidestep.conf":
        raise ConfigError(f"{key}: {value!r}: a config file may add only folders (file://) to the search path")
    if leaf == "_target_":
        check_target(key, value)
    if isinstance(value, str) and "${" in value:
        _vet_interpolation(key, value, record)


def _vet_interpolation(key: str, value: str, record: bool) -> None:
    resolvers = set(_RESOLVER.findall(value))
    if key.startswith(RUN_DIR_KEYS):
        allowed = _run_dir_resolvers()
    elif record:
        raise ConfigError(f"{key}: {value!r}: a saved run holds resolved values, not interpolations (this record "
                          "was edited, or written by a start that was refused)")
    else:
        allowed = frozenset(RECIPE_RESOLVERS)
    unknown = sorted(resolvers - allowed)
    if unknown:
        raise ConfigError(f"{key}: {value!r}: the resolver {unknown[0]} is not allowed in a config file (only "
                          "references such as ${adapter.rank} and ${now:...})")


def _leaves(node: Any, prefix: str) -> Iterable[Tuple[str, Any]]:
    """(dotted key, value) of every leaf; list items as `key.0`. Keys of nodes are checked as leaves too, so a
    `_target_` holding a mapping is still seen."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else None
    if items is None:
        yield prefix, node
        return
    for key, value in items:
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, (dict, list)) and str(key) in ("_target_", "()"):
            yield full, value
        else:
            yield from _leaves(value, full)


def is_record(path: Path) -> bool:
    """A run's saved `.hydra/` file (or one of a resume attempt's)."""
    return ".hydra" in Path(path).parts


def file_package(config_path: str, header: dict) -> str:
    """Where Hydra puts the keys of `config_path` (`experiment/x` with `# @package _global_`: the root), from its
    header; as Hydra does, a file without one lands at its group."""
    group = config_path.rpartition("/")[0].replace("/", ".")
    package = header.get("package")
    if package is None:
        return group
    if package == "_global_" or package.startswith("_global_."):
        return package[len("_global_."):] if package.startswith("_global_.") else ""
    return package.replace("_group_", group).replace("_name_", config_path.rpartition("/")[2])

