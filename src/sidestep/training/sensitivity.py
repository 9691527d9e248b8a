"""Which DiT projections matter for this dataset: gradient sensitivity, and a LoRA rank plan from it.

For every candidate linear layer W the score is the empirical Fisher diagonal summed over W: the mean over
batches of sum((dL/dW)^2), with the same loss and timestep sampling as training. dL/dW is formed per layer
from the layer's input and output gradient (hooks) and reduced to two numbers at once, so no weight ever
holds a gradient: memory stays what a forward/backward pass needs, plus one weight-sized matrix.
"""

import math
import re
from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch

from sidestep.config.choices import ATTENTION_PROJECTIONS
from sidestep.models.keymap import ATTENTION_RENAMES


@dataclass
class ModuleScore:
    in_features: int
    out_features: int
    fisher: float = 0.0  # running sum over batches of sum((dL/dW)^2)
    grad_norm: float = 0.0  # running sum over batches of ||dL/dW||


def candidate_modules(transformer: torch.nn.Module, blocks: List[str], include_mlp: bool) -> Dict[str, torch.nn.Linear]:
    attention = "|".join(re.escape(ATTENTION_RENAMES[p]) for p in ATTENTION_PROJECTIONS)
    branches = [f"(?:{'|'.join(blocks)})\\.(?:{attention})"]
    if include_mlp:
        branches.append("mlp\\.(?:gate_proj|up_proj|down_proj)")
    pattern = re.compile(f"layers\\.\\d+\\.(?:{'|'.join(branches)})")
    return {name: m for name, m in transformer.named_modules() if pattern.fullmatch(name) and isinstance(m, torch.nn.Linear)}


class SensitivityMeter:
    """Forward and backward hooks that add each batch's weight-gradient statistics to `scores`."""

    def __init__(self, modules: Dict[str, torch.nn.Linear]):
        self.scores = {n: ModuleScore(m.in_features, m.out_features) for n, m in modules.items()}
        self.inputs: Dict[str, torch.Tensor] = {}
        self.handles = []
        for name, module in modules.items():
            self.handles.append(module.register_forward_hook(self._keep_input(name)))
            self.handles.append(module.register_full_backward_hook(self._score(name)))

    def _keep_input(self, name):
        def hook(module, args, output):
            self.inputs[name] = args[0].detach()
        return hook

    def _score(self, name):
        def hook(module, grad_input, grad_output):
            x = self.inputs.pop(name)
            g = grad_output[0].reshape(-1, module.out_features).float().T @ x.reshape(-1, module.in_features).float()
            score = self.scores[name]
            score.fisher += float(g.pow(2).sum())
            score.grad_norm += float(g.norm())
        return hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def plan_ranks(scores: Dict[str, ModuleScore], budget: int, ranks: List[int]) -> Dict[str, int]:
    """Ranks from `ranks` roughly proportional to each module's share of the total score, never over `budget`
    trainable parameters and never over a module's width; 0 means the module is left out. Leftover budget goes to
    the highest scores first, and never to a module that scored nothing."""
    allowed = {n: [r for r in sorted(ranks) if r <= min(s.in_features, s.out_features)] for n, s in scores.items()}
    total = sum(s.fisher for s in scores.values()) or 1.0
    cost = {n: s.in_features + s.out_features for n, s in scores.items()}
    plan = {}
    for name, score in scores.items():
        ideal = budget * score.fisher / total / cost[name]
        plan[name] = max([r for r in allowed[name] if r <= ideal], default=0)
    used = sum(plan[n] * cost[n] for n in plan)
    upgraded = True
    while upgraded:  # one allowed step up at a time, best scores first, while the budget lasts
        upgraded = False
        for name in sorted((n for n in scores if scores[n].fisher > 0), key=lambda n: -scores[n].fisher):
            bigger = [r for r in allowed[name] if r > plan[name]]
            if bigger and used + (bigger[0] - plan[name]) * cost[name] <= budget:
                used += (bigger[0] - plan[name]) * cost[name]
                plan[name] = bigger[0]
                upgraded = True
    return plan


def uniform_budget(scores: Dict[str, ModuleScore], rank: int) -> int:
    return sum(rank * (s.in_features + s.out_features) for s in scores.values())


def layer_and_projection(name: str) -> Tuple[int, str]:
    """`layers.3.cross_attn.to_out.0` -> (3, "cross_attn.o_proj")."""
    parts = name.split(".")
    projection = {ATTENTION_RENAMES[p]: p for p in ATTENTION_PROJECTIONS}.get(".".join(parts[3:]), ".".join(parts[3:]))
    return int(parts[1]), f"{parts[2]}.{projection}"


def mean(value: float, batches: int) -> float:
    return value / max(batches, 1) if math.isfinite(value) else float("nan")
