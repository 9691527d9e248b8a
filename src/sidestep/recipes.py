"""Recipes: the config tree composed from Python, a config checked the trainer's way, and experiment files.

`sidestep.wizard` builds on these: every default it offers is `composed(...)`, every answer goes through
`config_problem` (the same compose, type, range and path checks `python -m sidestep.train` runs), and the result
is written by `recipe` as an `experiment/<name>.yaml` of the user's config folder (`user_config.py`) holding only
what differs from the tree's defaults.
Call them inside `hydra.initialize_config_module(config_module="sidestep.conf", ...)`.
"""

import time
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

import sidestep.conf
from sidestep.config import flatten, resolve
from sidestep.config.yaml_data import load_yaml_data
from sidestep.errors import SidestepError
from sidestep.user_config import user_config_dir

HEADER = "# Written by python -m sidestep.wizard"
RECIPE_GROUPS = ("model", "adapter", "optimizer", "scheduler", "attention", "timesteps", "data")  # written as `override /g: x`
Setup = Tuple[Tuple[str, ...], Tuple[str, ...]]  # (Hydra overrides: group=option, key=value; then key=value settings)


@lru_cache(maxsize=None)
def _compose(overrides: Tuple[str, ...]) -> Tuple[DictConfig, Dict[str, Optional[str]]]:
    cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


@lru_cache(maxsize=None)
def composed(setup: Setup) -> DictConfig:
    """Hydra composes the overrides; the settings are merged on top into the typed config, as Hydra would apply
    them (a merge takes milliseconds where a composition takes a good part of a second)."""
    overrides, settings = setup
    cfg = _compose(overrides)[0]
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(settings))) if settings else cfg


def choices_of(overrides: Tuple[str, ...]) -> Dict[str, Optional[str]]:
    """Which option each config group got: `{"model": "turbo", "vram": None, ...}`."""
    return _compose(overrides)[1]


def group_options(group: str) -> List[str]:
    return GlobalHydra.instance().config_loader().get_group_options(group)


def config_problem(setup: Setup) -> Optional[str]:
    """What the trainer would say about this config (compose, type, range and path checks), or None."""
    try:
        resolve(composed(setup))
    except SidestepError as err:
        return str(err)
    except (HydraException, OmegaConfBaseException) as err:
        cause = err.__cause__ or err
        if getattr(cause, "full_key", None):
            return f"{cause.full_key}: {str(cause).splitlines()[0]}"
        return str(err).splitlines()[0]
    return None


def is_ours(path: Path) -> bool:
    return any(line.startswith(HEADER) for line in path.read_text().splitlines()[:3])


def recipe(setup: Setup, started_from: str, command: str) -> str:
    """The experiment file: group choices and values that differ from the config tree's defaults."""
    chosen, tree = choices_of(setup[0]), choices_of(())
    groups = {g: chosen[g] for g in RECIPE_GROUPS if chosen[g] != tree[g]}
    base = flatten(OmegaConf.to_container(composed((tuple(f"{g}={c}" for g, c in groups.items()), ())), resolve=True))
    now = flatten(OmegaConf.to_container(composed(setup), resolve=True))
    body: dict = {"defaults": [{f"override /{g}": c} for g, c in groups.items()]} if groups else {}
    for key, value in now.items():
        if not key.startswith("ui.") and (key not in base or base[key] != value):
            *parents, leaf = key.split(".")
            node = body
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
    header = ["# @package _global_", f"{HEADER} on {time.strftime('%Y-%m-%d %H:%M')}"
              + (f", starting from {started_from}" if started_from else ""), f"# Train it: {command}"]
    return "\n".join(header) + "\n" + OmegaConf.to_yaml(OmegaConf.create(body))


def destination(out: Optional[Path]) -> Tuple[Path, List[str]]:
    """(the config dir the recipe goes in, the arguments `sidestep.train` then needs before `experiment=`): the
    user's config folder, which `conf/train.yaml` puts on Hydra's search path, or `--out DIR` with `--config-dir`."""
    if out is None:
        return user_config_dir(), []
    out = out.expanduser().resolve()
    return out, ["--config-dir", str(out)]


def is_shipped(option: str) -> bool:
    """A preset of the installed tree: a recipe of that name would never be found (the tree comes first)."""
    return (Path(sidestep.conf.__file__).parent / "experiment" / f"{option}.yaml").is_file()


def verify(config_dir: Path, extra: List[str], name: str, expected: DictConfig) -> None:
    """The printed command must compose to exactly what was answered and pass the trainer's checks."""
    quoted = str(config_dir).replace("\\", "\\\\").replace("'", "\\'")
    search = [f"hydra.searchpath=['file://{quoted}']"] if extra else []
    _compose.cache_clear()  # a fresh look: the recipe may replace one composed earlier under the same name
    composed.cache_clear()
    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        written = ((*search, f"experiment={name}"), ())
        problem = config_problem(written)
        got = flatten(OmegaConf.to_container(composed(written), resolve=True))
    want = flatten(OmegaConf.to_container(expected, resolve=True))
    differs = sorted(k for k in set(got) | set(want) if not k.startswith("ui.") and got.get(k) != want.get(k))
    if problem or differs:
        raise SidestepError(f"the written recipe does not reproduce the answers ({problem or differs[:3]}); "
                            "please report this")


def leaves_model_and_data(option: str, config_dir: Path) -> bool:
    """Whether `experiment=<option>` is a preset to start from: it chooses neither the model nor the data (the demo
    does both) and is not a recipe the wizard wrote (which names your folders)."""
    for root in (Path(sidestep.conf.__file__).parent, config_dir):
        path = root / "experiment" / f"{option}.yaml"
        if path.is_file():
            recipe = OmegaConf.to_container(load_yaml_data(path), resolve=False)
            entries = recipe.get("defaults", []) if isinstance(recipe, dict) else []
            keys = [k for e in entries if isinstance(e, dict) for k in e]
            return not is_ours(path) and not any(k.split("/")[-1] in ("model", "data") for k in keys)
    return True
