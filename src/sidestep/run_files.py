"""Reading a run that is changing underneath: training prunes old checkpoints and renames files into place while
the monitor and the report read them, so a file that disappears between being listed and being read is skipped
(as if it had never been listed), never an error. A YAML file of the run is read as data (`config/yaml_data.py`),
so a folder someone sent cannot hang a reader with an alias bomb."""

import logging
from pathlib import Path
from typing import Callable, Optional, TypeVar

from omegaconf import OmegaConf

from sidestep.config.renamed_keys import renamed_config
from sidestep.config.yaml_data import load_yaml_data
from sidestep.errors import ConfigError

T = TypeVar("T")
log = logging.getLogger(__name__)


def if_present(read: Callable[[], T]) -> Optional[T]:
    """`read()`, or None when what it reads has gone (or has not come yet)."""
    try:
        return read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def mtime(path: Path) -> Optional[float]:
    return if_present(lambda: path.stat().st_mtime)


def load_yaml(path: Path) -> Optional[object]:
    """A YAML file of the run as plain Python in today's key names (a run from before `adapter.rank`; interpolations
    left as text), or None when there is none or it is not plain YAML data (said once in the log)."""
    if not path.is_file() and not path.is_symlink():
        return None
    try:
        return if_present(lambda: renamed_config(OmegaConf.to_container(load_yaml_data(path, record=True),
                                                                        resolve=False)))
    except ConfigError as err:
        log.warning("skipped: %s", err)
        return None
