"""`adapter.rank_map=<estimate.json>`: per-module ranks from `sidestep.estimate`, checked against the model."""

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

from omegaconf import DictConfig, OmegaConf

from sidestep.config.choices import ATTENTION_PROJECTIONS, AttentionBlock
from sidestep.errors import ConfigError
from sidestep.models.keymap import ATTENTION_RENAMES

FORMAT = "sidestep.estimate/1"
MODULE_NAME = re.compile(r"layers\.(\d+)\.(?:(?:" + "|".join(b.value for b in AttentionBlock) + r")\.(?:"
                         + "|".join(re.escape(ATTENTION_RENAMES[p]) for p in ATTENTION_PROJECTIONS)
                         + r")|mlp\.(?:gate_proj|up_proj|down_proj))")  # a DiT projection, by its diffusers name


@dataclass(frozen=True)
class RankMap:
    path: Path
    ranks: Dict[str, int]  # diffusers module name -> rank; 0 = left out
    features: Dict[str, int]  # module name -> in_features + out_features

    @property
    def trained(self) -> Dict[str, int]:
        return {name: rank for name, rank in self.ranks.items() if rank > 0}

    def parameter_count(self) -> int:
        return sum(rank * self.features[name] for name, rank in self.trained.items())

    def describe(self) -> str:
        counts: Dict[int, int] = {}
        for rank in self.trained.values():
            counts[rank] = counts.get(rank, 0) + 1
        spread = ", ".join(f"{n} x r{r}" for r, n in sorted(counts.items()))
        left_out = len(self.ranks) - len(self.trained)
        return f"rank map {self.path.name}: {spread}; {left_out} module(s) left out"


def read_rank_map(path: str, arch: DictConfig) -> RankMap:
    """The file, checked as data someone may have edited: its shape, each module a projection of this DiT, each
    rank a whole number no larger than the module's width."""
    file = Path(path)
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested too deeply to read
        data = None
    if not (isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("modules"), dict)
            and isinstance(data.get("arch", {}), dict)):
        raise ConfigError(f"adapter.rank_map: {file} is not an estimate.json from python -m sidestep.estimate")
    made_for = data.get("arch", {})
    differences = [f"{k} {made_for.get(k)} there, {v} here" for k, v in OmegaConf.to_container(arch).items()
                   if made_for.get(k) != v]
    if differences:
        raise ConfigError(f"adapter.rank_map: {file} was estimated for another model ({'; '.join(differences)}); "
                          "run python -m sidestep.estimate for this one")
    widest = max(int(arch[k]) for k in ("hidden_size", "intermediate_size", "encoder_hidden_size"))
    ranks, features = {}, {}
    for name, module in data["modules"].items():
        ranks[name], features[name] = _module(file, name, module, int(arch.num_hidden_layers), widest)
    if not any(ranks.values()):
        raise ConfigError(f"adapter.rank_map: {file} leaves every module out; raise estimate.budget_params and re-estimate")
    return RankMap(file, ranks, features)


def _module(file: Path, name: str, module: object, layers: int, widest: int) -> Tuple[int, int]:
    """(rank, in + out features) of one entry; PEFT reads the names as patterns, so only exact module names pass."""
    match = MODULE_NAME.fullmatch(name)
    if match is None or int(match.group(1)) >= layers:
        raise ConfigError(f"adapter.rank_map: {file}: {name!r} is not a projection of this DiT (e.g. "
                          f"layers.0.self_attn.to_q, layers 0-{layers - 1}); re-estimate")
    values = [module.get(k) for k in ("rank", "in_features", "out_features")] if isinstance(module, dict) else []
    if len(values) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"adapter.rank_map: {file}: {name} needs whole numbers for rank, in_features and out_features")
    rank, fan_in, fan_out = values
    if not (0 < fan_in <= widest and 0 < fan_out <= widest and 0 <= rank <= max(fan_in, fan_out)):
        raise ConfigError(f"adapter.rank_map: {file}: {name} has rank {rank} for {fan_in} -> {fan_out} features; a rank "
                          "is between 0 and the module's width, and no width exceeds the model's")
    return rank, fan_in + fan_out
