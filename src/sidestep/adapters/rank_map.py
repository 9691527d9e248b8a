"""`lora.rank_map=<estimate.json>`: per-module ranks from `sidestep.estimate`, checked against the model."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict

from omegaconf import DictConfig, OmegaConf

from sidestep.errors import ConfigError

FORMAT = "sidestep.estimate/1"


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
    file = Path(path)
    try:
        data = json.loads(file.read_text())
        assert data.get("format") == FORMAT
        modules = data["modules"]
        ranks = {name: int(m["rank"]) for name, m in modules.items()}
        features = {name: int(m["in_features"]) + int(m["out_features"]) for name, m in modules.items()}
        made_for = data.get("arch", {})
        assert isinstance(made_for, dict) and all(r >= 0 for r in ranks.values()) and all(f > 0 for f in features.values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError, AssertionError, RecursionError):
        raise ConfigError(f"lora.rank_map: {file} is not an estimate.json from python -m sidestep.estimate") from None
    differences = [f"{k} {made_for.get(k)} there, {v} here" for k, v in OmegaConf.to_container(arch).items()
                   if made_for.get(k) != v]
    if differences:
        raise ConfigError(f"lora.rank_map: {file} was estimated for another model ({'; '.join(differences)}); "
                          "run python -m sidestep.estimate for this one")
    if not any(ranks.values()):
        raise ConfigError(f"lora.rank_map: {file} leaves every module out; raise estimate.budget_params and re-estimate")
    return RankMap(file, ranks, features)
