"""Config names that changed, and the one translation from the old spelling to the new: `lora.*` is now the
adapter type's own `adapter.*` (`lora.rank` -> `adapter.rank`), and the timestep group `training=` is now
`timesteps=`; a schedule's `_target_` names a class (`lr_schedules.cosine` -> `lr_schedules.Cosine`), and a data
source's names its schema (`data.sources.SampleFolder` -> `config.data_sources.SampleFolders`). A command line, a
recipe a user wrote and the record of a run from before keep working: what a person typed or wrote gets one `note:`
line per old key and command; a run's record is translated quietly.
"""

import re
import sys
from typing import Any, Dict, Iterable, List, Optional

from omegaconf import DictConfig, OmegaConf

RENAMED_NODES = {"lora": "adapter", "training": "timesteps"}  # old top-level node -> new
SWEEP_PARAMS = "hydra.sweeper.params."  # a sweeper's search space names config keys too
SCHEDULES = "sidestep.training.lr_schedules."
RENAMED_TARGETS = {  # {group: {old _target_: new}}
    "scheduler": {SCHEDULES + old: SCHEDULES + new for old, new in (  # a schedule was a function, now a class
        ("cosine", "Cosine"), ("linear", "Linear"), ("constant", "Constant"),
        ("constant_with_warmup", "ConstantWithWarmup"))},
    "data": {"sidestep.data.sources.SampleFolder": "sidestep.config.data_sources.SampleFolders",  # a class beside
             "sidestep.data.sources.SyntheticSamples": "sidestep.config.data_sources.SyntheticSamples"},  # its schema
}
OLD_REFERENCE = re.compile(r"\$\{(lora|training)\.")
_noticed = set()


def renamed_key(key: str) -> Optional[str]:
    """The new name of an old dotted key (`lora.rank` -> `adapter.rank`, `training` -> `timesteps`), else None.
    `lora` alone named no group, so only its keys move."""
    prefix = SWEEP_PARAMS if key.startswith(SWEEP_PARAMS) else ""
    node, dot, rest = key[len(prefix):].partition(".")
    if node not in RENAMED_NODES or (node == "lora" and not rest):
        return None
    return f"{prefix}{RENAMED_NODES[node]}{dot}{rest}"


def notice(old: str, new: str, where: str = "") -> None:
    """`note: lora.rank is now adapter.rank`, once per old key in this command."""
    if old in _noticed:
        return
    _noticed.add(old)
    print(f"note: {old} is now {new}{f' ({where})' if where else ''}", file=sys.stderr)


def renamed_overrides(args: Iterable[str], notify: bool = True) -> List[str]:
    """Command-line arguments with every old key renamed (`+lora.rank=16`, `~lora.bias`, `training=vanilla`,
    `lora.rank=16,64` of a sweep); flags and values are left as they are."""
    out = []
    for arg in args:
        sign = re.match(r"[+~]*", arg).group(0)
        key, eq, value = arg[len(sign):].partition("=")
        new = None if arg.startswith("-") or not (eq or "~" in sign) else renamed_key(key)
        if new is None:
            out.append(arg)
            continue
        if notify:
            notice(*((key, new) if "." in key else (f"{key}=", f"{new}=")))
        out.append(f"{sign}{new}{eq}{value}")
    return out


def renamed_config(cfg: Any, where: str = "", notify: bool = False) -> Any:
    """A loaded config (a recipe, a run's `config.yaml`) or list of overrides (`overrides.yaml`) in today's names:
    a top-level `lora:` section merged into `adapter:`, `training:` become `timesteps:`, in the defaults list too,
    in a sweeper's search space and in `${lora.rank}` references. Anything else comes back as it was."""
    if isinstance(cfg, (list, tuple)) and all(isinstance(a, str) for a in cfg):
        return renamed_overrides(cfg, notify)
    if isinstance(cfg, DictConfig):
        if not _has_old_names(OmegaConf.to_container(cfg, resolve=False)):
            return cfg
        return OmegaConf.create(renamed_config(OmegaConf.to_container(cfg, resolve=False), where, notify))
    if not isinstance(cfg, dict) or not _has_old_names(cfg):
        return cfg
    out: Dict[str, Any] = {k: v for k, v in cfg.items() if not (k in RENAMED_NODES and isinstance(v, dict))}
    for old, new in RENAMED_NODES.items():
        if isinstance(cfg.get(old), dict):
            for leaf in cfg[old]:
                _tell(notify, f"{old}.{leaf}", f"{new}.{leaf}", where)
            out[new] = {**cfg[old], **(out[new] if isinstance(out.get(new), dict) else {})}
    for group, renamed in RENAMED_TARGETS.items():
        if isinstance(out.get(group), dict) and out[group].get("_target_") in renamed:
            out[group] = {**out[group], "_target_": renamed[out[group]["_target_"]]}
    if isinstance(out.get("defaults"), list):
        out["defaults"] = [_renamed_default(entry, where, notify) for entry in out["defaults"]]
    params = (out.get("hydra") or {}).get("sweeper", {}).get("params") if isinstance(out.get("hydra"), dict) else None
    if isinstance(params, dict):
        for key in list(params):
            new = renamed_key(f"{SWEEP_PARAMS}{key}")
            if new is not None:
                _tell(notify, key, new[len(SWEEP_PARAMS):], where)
                params[new[len(SWEEP_PARAMS):]] = params.pop(key)
    return _renamed_references(out, where, notify)


def renamed_fingerprint(saved: Dict[str, Any], first_adapter: Dict[str, Any]) -> Dict[str, Any]:
    """A checkpoint's fingerprint written before the rename, keyed as today's (`lora.rank` into `adapter`,
    `training` -> `timesteps`); only the adapter knobs its type has today are kept. `first_adapter`: what a
    checkpoint from before `adapter=` had."""
    from sidestep.config.parts import ADAPTER_SCHEMAS, knobs_of

    if not any(k.startswith("lora.") or k == "training" for k in saved):
        return saved
    out = {k: v for k, v in saved.items() if not k.startswith("lora.") and k != "training"}
    if "training" in saved:
        out["timesteps"] = saved["training"]
    adapter = dict(saved.get("adapter") or first_adapter)
    schema = next((s for s in ADAPTER_SCHEMAS.values() if s._target_ == adapter.get("_target_")), None)
    knobs = knobs_of(schema) if schema is not None else ()
    for key, value in saved.items():
        leaf = key[len("lora."):]
        if key == "lora.rank_map":
            out["adapter.rank_map"] = value
        elif key.startswith("lora.") and leaf in knobs:
            adapter[leaf] = value
    out["adapter"] = adapter
    return out


def _renamed_default(entry: Any, where: str, notify: bool) -> Any:
    """`override /training: vanilla` -> `override /timesteps: vanilla` (a defaults-list entry is a one-key dict)."""
    if not isinstance(entry, dict) or len(entry) != 1:
        return entry
    (key, value), = entry.items()
    match = re.fullmatch(r"((?:override |optional )*/?)training", str(key))
    if match is None:
        return entry
    _tell(notify, "training=", "timesteps=", where)
    return {f"{match.group(1)}timesteps": value}


def _renamed_references(node: Any, where: str, notify: bool) -> Any:
    """`${lora.rank}` -> `${adapter.rank}` in every string value."""
    if isinstance(node, dict):
        return {k: _renamed_references(v, where, notify) for k, v in node.items()}
    if isinstance(node, list):
        return [_renamed_references(v, where, notify) for v in node]
    if isinstance(node, str) and OLD_REFERENCE.search(node):
        renamed = OLD_REFERENCE.sub(lambda m: "${" + RENAMED_NODES[m.group(1)] + ".", node)
        _tell(notify, node, renamed, where)
        return renamed
    return node


def _has_old_names(cfg: Any) -> bool:
    if not isinstance(cfg, dict):
        return False
    params = cfg.get("hydra", {}).get("sweeper", {}).get("params") if isinstance(cfg.get("hydra"), dict) else None
    defaults = cfg.get("defaults") if isinstance(cfg.get("defaults"), list) else []
    return (any(isinstance(cfg.get(k), dict) for k in RENAMED_NODES) or _has_old_targets(cfg)
            or any(isinstance(e, dict) and any(re.search(r"(^|/|\s)training$", str(k)) for k in e) for e in defaults)
            or (isinstance(params, dict) and any(renamed_key(f"{SWEEP_PARAMS}{k}") for k in params))
            or OLD_REFERENCE.search(str(cfg)) is not None)


def _has_old_targets(cfg: Dict[str, Any]) -> bool:
    return any(isinstance(cfg.get(group), dict) and cfg[group].get("_target_") in renamed
               for group, renamed in RENAMED_TARGETS.items())


def _tell(notify: bool, old: str, new: str, where: str) -> None:
    if notify:
        notice(old, new, where)
