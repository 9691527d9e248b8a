"""The sensitivity estimate, top to bottom: data -> frozen DiT with hooks -> N forward/backward passes ->
scores -> rank plan -> `estimate.json` and a heat map, and the result, whose shares the caller shows as tables.
No weight is ever updated."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Protocol, Tuple

import torch
from accelerate.utils import set_seed
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from sidestep.adapters.rank_map import FORMAT
from sidestep.atomic import atomic_file
from sidestep.data.loader import make_loader, open_dataset, release_workers
from sidestep.models.source import ModelSource, model_source
from sidestep.training.accelerator import build_accelerator, weight_dtype
from sidestep.training.flow_matching import (
    StepGenerators,
    StepSettings,
    flow_matching_loss,
)
from sidestep.training.sensitivity import (
    ModuleScore,
    SensitivityMeter,
    candidate_modules,
    layer_and_projection,
    mean,
    plan_ranks,
    uniform_budget,
)

GRAD_INPUTS = ("target_latents", "context_latents", "encoder_hidden_states")
GROUPINGS = ("layer", "projection")  # the tables of shares: by layer, then by projection type


class BatchCounter(Protocol):
    """The caller's display of scoring: entered around the batches, told how many are done after each."""

    def __enter__(self) -> "BatchCounter": ...
    def __exit__(self, *exc) -> None: ...
    def update(self, done: int) -> None: ...


@dataclass
class Estimate:
    """What the estimate found and where it wrote it (`estimate.json`; the heat map `estimate.png` beside it)."""

    path: Path
    scores: Dict[str, ModuleScore]
    plan: Dict[str, int]
    budget: int
    batches: int

    @property
    def used_params(self) -> int:
        return sum(self.plan[n] * (s.in_features + s.out_features) for n, s in self.scores.items())

    @property
    def modules_with_lora(self) -> int:
        return sum(1 for rank in self.plan.values() if rank)

    def shares(self, grouping: str) -> List[Tuple[str, float, str]]:
        """Per layer or projection type, largest first: (its name, its share of the total score, the ranks planned
        for each of its modules)."""
        key = GROUPINGS.index(grouping)
        total = sum(s.fisher for s in self.scores.values()) or 1.0
        groups: Dict[object, list] = {}
        for name in self.scores:
            groups.setdefault(layer_and_projection(name)[key], []).append(name)
        rows = []
        for group, names in sorted(groups.items(), key=lambda kv: -sum(self.scores[n].fisher for n in kv[1])):
            share = sum(self.scores[n].fisher for n in names) / total
            ranks = "  ".join(f"{_short(n, key)}:{self.plan[n] or '-'}" for n in sorted(names))
            rows.append((str(group), share, ranks))
        return rows


def estimate(cfg: DictConfig, run_dir: Path, progress: BatchCounter, model: Optional[ModelSource] = None) -> Estimate:
    """`model`: the source `cfg` was settled with (default: built from `cfg.model`)."""
    est = cfg.estimate
    accelerator = build_accelerator(cfg.trainer, run_dir)
    set_seed(cfg.trainer.seed)
    dataset = open_dataset(cfg)
    loader, _ = make_loader(cfg, dataset, accelerator.device.type)
    dit = (model or model_source(cfg.model)).dit(weight_dtype(accelerator.mixed_precision), accelerator.device)
    transformer, loader = accelerator.prepare(dit.transformer.eval(), loader)
    null_emb = dit.null_condition_emb.to(accelerator.device)
    meter = SensitivityMeter(candidate_modules(transformer, list(cfg.attention.blocks), est.include_mlp))
    gens, settings = StepGenerators.from_seed(cfg.trainer.seed), StepSettings.from_config(cfg.timesteps, cfg.model)

    done, epoch = 0, 0
    with progress:
        while done < est.batches:
            loader.set_epoch(epoch)
            for batch in loader:
                for key in GRAD_INPUTS:  # gradients flow to every layer; no weight needs one
                    batch[key] = batch[key].detach().requires_grad_(True)
                with accelerator.autocast():
                    loss, _ = flow_matching_loss(transformer, batch, null_emb, settings, gens)
                loss.backward()
                done += 1
                progress.update(done)
                if done >= est.batches:
                    break
            epoch += 1
    meter.close()
    release_workers(loader)

    scores = meter.scores
    budget = est.budget_params or uniform_budget(scores, cfg.adapter.rank)
    plan = plan_ranks(scores, budget, list(est.ranks))
    path = run_dir / "estimate.json"
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(_report(cfg, scores, plan, budget, done), indent=2))
    _heat_map(scores, run_dir / "estimate.png")
    return Estimate(path, scores, plan, budget, done)


def _report(cfg: DictConfig, scores: Dict[str, ModuleScore], plan: Dict[str, int], budget: int, batches: int) -> dict:
    top = max((s.fisher for s in scores.values()), default=0.0) or 1.0
    return {
        "format": FORMAT,
        "model": cfg.model.variant,
        "arch": OmegaConf.to_container(cfg.model.arch),
        "batches": batches,
        "budget_params": budget,
        "modules": {name: {"score": mean(s.fisher, batches), "normalized": s.fisher / top,
                           "grad_norm": mean(s.grad_norm, batches), "rank": plan[name],
                           "in_features": s.in_features, "out_features": s.out_features}
                    for name, s in sorted(scores.items(), key=lambda kv: -kv[1].fisher)},
        "left_out": sorted(name for name, rank in plan.items() if rank == 0),
    }


def _short(name: str, grouped_by: int) -> str:
    """Within a layer row, name the projection; within a projection row, name the layer."""
    layer, projection = layer_and_projection(name)
    return projection if grouped_by == 0 else f"L{layer}"


def _heat_map(scores: Dict[str, ModuleScore], path: Path) -> None:
    cells = {layer_and_projection(n): s.fisher for n, s in scores.items()}
    layers = sorted({layer for layer, _ in cells})
    projections = sorted({projection for _, projection in cells})
    grid = torch.zeros(len(layers), len(projections))
    for (layer, projection), value in cells.items():
        grid[layers.index(layer), projections.index(projection)] = value
    fig = Figure(figsize=(2 + 0.7 * len(projections), 2.5 + 0.3 * len(layers)))
    ax = fig.subplots()
    image = ax.imshow((grid / grid.max().clamp(min=1e-30)).numpy(), aspect="auto", cmap="magma")
    ax.set(xticks=range(len(projections)), yticks=range(len(layers)), xlabel="projection", ylabel="layer",
           title="LoRA sensitivity (share of the largest)")
    ax.set_xticklabels(projections, rotation=45, ha="right")
    ax.set_yticklabels(layers)
    fig.colorbar(image)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
