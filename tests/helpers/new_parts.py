"""A part added as a contributor would add it: its schema in the registry (the caller patches the group's table), its
YAML in the user's config folder, which is on Hydra's search path."""

import contextlib
from pathlib import Path
from typing import Iterator

from sidestep.config import register_schemas
from sidestep.config.trust import shipped_targets
from sidestep.user_config import ENV_OVERRIDE


@contextlib.contextmanager
def option_in_user_config(monkeypatch, folder: Path, group: str, name: str) -> Iterator[Path]:
    """`<folder>/<group>/<name>.yaml` extending `/schema/<group>/<name>`, that folder as the user's config folder,
    and the schemas registered again; the cache of shipped targets is cleared before and after."""
    (folder / group).mkdir(parents=True, exist_ok=True)
    (folder / group / f"{name}.yaml").write_text(f"defaults:\n  - /schema/{group}/{name}@_here_\n")
    monkeypatch.setenv(ENV_OVERRIDE, str(folder))
    shipped_targets.cache_clear()
    register_schemas()
    try:
        yield folder
    finally:
        shipped_targets.cache_clear()
