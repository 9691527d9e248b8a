"""Overrides from the page, checked as the command line checks them before anything starts: only `key=value`
for a schema key or a config group (`config/overrides.py`), composed and resolved (`config/resolve.py`) for every
combination of a sweep, so a bad value gets the same one line as `python -m sidestep.train` prints."""

import itertools
import re
import threading
from pathlib import Path
from typing import List, Tuple

from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from sidestep.config import register_schemas, resolve
from sidestep.config.overrides import check_overrides
from sidestep.errors import ConfigError, first_line
from sidestep.run_record import register_resolver
from sidestep.studio.forms import conf_dir

KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
MAX_CHECKED = 64  # sweep combinations composed and checked before starting
_compose_lock = threading.Lock()  # Hydra's global state: one composition at a time

register_schemas()
register_resolver()


def checked(overrides: List[str], sweep: bool) -> List[str]:
    """The overrides, each a plain `key=value` the schema knows, else a `ConfigError` naming it. Hydra's own keys,
    additions, deletions, `_target_` and interpolations are refused: the page never chooses code to run."""
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not KEY.fullmatch(key):
            raise ConfigError(f"{override}: expected key=value with a key of the training config")
        if key.startswith("hydra") or "_target_" in key or "${" in value:
            raise ConfigError(f"{override}: the studio sets only the training config's options")
    check_overrides(overrides, conf_dir())
    parsed = _parse(overrides)
    if any(o.is_sweep_override() for o in parsed) and not sweep:
        raise ConfigError(f"{next(o.input_line for o in parsed if o.is_sweep_override())}: a comma list tries each "
                          "value in a sweep; tick `sweep` (python -m sidestep.train -m)")
    return overrides


def combinations(overrides: List[str]) -> List[List[str]]:
    """The jobs a basic sweep runs: every combination of the comma lists."""
    choices = [[f"{o.key_or_group}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
               else [o.input_line] for o in _parse(overrides)]
    return [list(combo) for combo in itertools.islice(itertools.product(*choices), MAX_CHECKED)]


def _parse(overrides: List[str]):
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise ConfigError(f"cannot parse these overrides ({first_line(err)}); quote values with brackets or "
                          "spaces, e.g. 'adapter.target_modules=[q_proj,v_proj]'") from None


def composed(overrides: List[str]) -> Tuple[DictConfig, DictConfig]:
    """(the resolved config, Hydra's node with the run and sweep folders) of one job, as `sidestep.train` has it."""
    with _compose_lock:
        try:
            with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
                cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
            hydra_node = OmegaConf.create({"run": OmegaConf.select(cfg, "hydra.run.dir"),
                                           "sweep": OmegaConf.select(cfg, "hydra.sweep.dir")})
            with open_dict(cfg):
                del cfg["hydra"]
            return resolve(cfg), hydra_node
        except (HydraException, OmegaConfBaseException) as err:
            cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else err
            key = getattr(cause, "full_key", None)
            raise ConfigError(f"{key}: {first_line(cause)}" if key else first_line(err)) from None


def under(root: Path, hydra_dir: str) -> Path:
    """Hydra's default folder (`outputs/<date>/<name>`, `multirun/<date>/<time>`) inside a served folder."""
    parts = Path(hydra_dir).parts
    return root.joinpath(*(parts[1:] if parts and parts[0] == "outputs" else parts))
