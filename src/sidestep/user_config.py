"""The user's own config folder, on Hydra's search path after the shipped `conf/`: the wizard's recipes go to its
`experiment/`, outside the repository, so a `git pull` never meets them and they survive a reinstall.

`SIDESTEP_CONFIG_DIR` when set (tests, several setups side by side); else `%APPDATA%\\sidestep` on Windows and
`$XDG_CONFIG_HOME/sidestep` (`~/.config/sidestep`) elsewhere.
"""

import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

ENV_OVERRIDE = "SIDESTEP_CONFIG_DIR"


def user_config_dir() -> Path:
    if os.environ.get(ENV_OVERRIDE):
        return Path(os.environ[ENV_OVERRIDE]).expanduser().resolve()
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "sidestep"
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "sidestep"


def search_path_entry() -> str:
    """`hydra.searchpath`'s entry in `conf/train.yaml`. The folder is made when missing, as Hydra warns about a
    search path that does not exist; where it cannot be made (a read-only home), the shipped tree stands in."""
    folder = user_config_dir()
    try:
        (folder / "experiment").mkdir(parents=True, exist_ok=True)
    except OSError:
        return "pkg://sidestep.conf"
    return f"file://{folder.as_posix()}"  # Hydra takes what follows file:// as the path (C:/... on Windows)


def register_user_config_resolver() -> None:
    if not OmegaConf.has_resolver("sidestep_user_config"):
        OmegaConf.register_new_resolver("sidestep_user_config", search_path_entry)
