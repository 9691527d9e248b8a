"""A YAML file from disk, checked as data before OmegaConf (or Hydra) parses it.

PyYAML's safe loader already refuses `!!python/...` tags, but with a traceback; a dozen lines of anchors and
aliases (`&a`/`*a`) expand to millions of nodes that OmegaConf copies one by one (the "billion laughs"), hanging
the command; and a run's `.hydra/config.yaml` may be a link to any file on the machine, whose text an error would
then print. `check_yaml_file` refuses each in one line naming the file, reading only the YAML's node graph (shared
nodes counted once per use without being copied).
"""

from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from sidestep.errors import ConfigError

MAX_BYTES = 8 << 20  # far above any config, recipe or prompt list Side-Step writes or reads
MAX_NODES = 200_000  # nodes once aliases are expanded; a full saved config holds a few hundred
PLAIN_TAGS = frozenset(tag for tag in yaml.SafeLoader.yaml_constructors if tag) | {"tag:yaml.org,2002:merge"}


def check_yaml_file(path: Path, record: bool = False) -> None:
    """Refuse (`ConfigError`) a file that is not plain YAML data of a sane size; `record`: a run's saved file,
    which Side-Step wrote itself and so is never a link."""
    path = Path(path)
    if record and path.is_symlink():
        raise ConfigError(f"{path}: a run's record is a link (to {path.resolve()}); a run folder holds its own files")
    if not path.is_file():
        raise ConfigError(f"{path}: not a file")
    if path.stat().st_size > MAX_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes is too large for a config file")
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())[:200]})") from None
    if root is not None:
        _count(root, path, {}, 0)


def load_yaml_data(path: Path, record: bool = False) -> Any:
    """The checked file, loaded by OmegaConf."""
    check_yaml_file(path, record)
    return OmegaConf.load(path)


def _count(node: yaml.Node, path: Path, seen: dict, total: int) -> int:
    """Nodes under `node` with aliases expanded (memoised per shared node); refuses past `MAX_NODES` or on a tag
    that names a constructor the safe loader does not have."""
    if node.tag not in PLAIN_TAGS:
        raise ConfigError(f"{path}: line {node.start_mark.line + 1}: the tag {node.tag!r} is not plain data")
    if id(node) in seen:
        size = seen[id(node)]
    else:
        children = node.value if isinstance(node, yaml.SequenceNode) else \
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
        size = 1
        for child in children:
            size += _count(child, path, seen, total + size)
        seen[id(node)] = size
    if total + size > MAX_NODES:
        raise ConfigError(f"{path}: expands to more than {MAX_NODES} values (anchors and aliases reused "
                          "over and over); a config file holds plain values")
    return size
