"""Plain copies of a config, for saving, printing and comparing."""

from typing import Any

from omegaconf import DictConfig, OmegaConf


def as_container(cfg: DictConfig) -> Any:
    """A plain, fully resolved copy for saving and printing."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def flatten(node: Any, sep: str = ".", prefix: str = "") -> dict:
    """`{"adapter": {"rank": 4}}` -> `{"adapter.rank": 4}` (leaves include lists and None), for comparing and logging."""
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for key, value in node.items():
        out.update(flatten(value, sep, f"{prefix}{sep}{key}" if prefix else str(key)))
    return out
