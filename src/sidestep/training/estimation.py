"""The sensitivity estimate, top to bottom: data -> frozen DiT with hooks -> N forward/backward passes ->
scores -> rank plan -> `estimate.json`, a ranked table and a heat map. No weight is ever updated."""

import json
import logging
from pathlib import Path
from typing import Dict

import torch
from accelerate.utils import set_seed
from omegaconf import DictConfig, OmegaConf
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from sidestep.adapters.rank_map import FORMAT
from sidestep.atomic import atomic_file
from sidestep.data.loader import make_loader, open_dataset
from sidestep.models.source import model_source
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
from sidestep.ui.console import console, is_plain

log = logging.getLogger(__name__)
GRAD_INPUTS = ("target_latents", "context_latents", "encoder_hidden_states")


def estimate(cfg: DictConfig, run_dir: Path) -> Path:
    est = cfg.estimate
    accelerator = build_accelerator(cfg.trainer, run_dir)
    set_seed(cfg.trainer.seed)
    dataset = open_dataset(cfg)
    loader, _ = make_loader(cfg, dataset, accelerator.device.type)
    dit = model_source(cfg.model).dit(weight_dtype(accelerator.mixed_precision), accelerator.device)
    transformer, loader = accelerator.prepare(dit.transformer.eval(), loader)
    null_emb = dit.null_condition_emb.to(accelerator.device)
    meter = SensitivityMeter(candidate_modules(transformer, list(cfg.attention.blocks), est.include_mlp))
    gens, settings = StepGenerators.from_seed(cfg.trainer.seed), StepSettings.from_config(cfg.training, cfg.model)

    done, epoch = 0, 0
    with Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                  disable=is_plain(cfg.ui.plain)) as progress:
        task = progress.add_task("batches", total=est.batches)
        while done < est.batches:
            loader.set_epoch(epoch)
            for batch in loader:
                for key in GRAD_INPUTS:  # gradients flow to every layer; no weight needs one
                    batch[key] = batch[key].detach().requires_grad_(True)
                with accelerator.autocast():
                    loss, _ = flow_matching_loss(transformer, batch, null_emb, settings, gens)
                loss.backward()
                done += 1
                progress.update(task, completed=done)
                if done >= est.batches:
                    break
            epoch += 1
    meter.close()

    scores = meter.scores
    budget = est.budget_params or uniform_budget(scores, cfg.lora.rank)
    plan = plan_ranks(scores, budget, list(est.ranks))
    path = run_dir / "estimate.json"
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(_report(cfg, scores, plan, budget, done), indent=2))
    _print_table(scores, plan, done)
    _heat_map(scores, run_dir / "estimate.png")
    used = sum(plan[n] * (s.in_features + s.out_features) for n, s in scores.items())
    log.info("estimate written to %s: %d of %d modules get LoRA, %s of %s parameters; train with lora.rank_map=%s",
             path, sum(1 for r in plan.values() if r), len(plan), f"{used:,}", f"{budget:,}", path)
    return path


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


def _print_table(scores: Dict[str, ModuleScore], plan: Dict[str, int], batches: int) -> None:
    """Share of the total score by layer and by projection type, with the ranks planned for each module."""
    total = sum(s.fisher for s in scores.values()) or 1.0
    for title, key in (("layer", 0), ("projection", 1)):
        groups: Dict[object, list] = {}
        for name in scores:
            groups.setdefault(layer_and_projection(name)[key], []).append(name)
        table = Table(title=f"Sensitivity by {title} ({batches} batches)", title_justify="left")
        for column in (title, "share", "planned ranks"):
            table.add_column(column)
        for group, names in sorted(groups.items(), key=lambda kv: -sum(scores[n].fisher for n in kv[1])):
            share = sum(scores[n].fisher for n in names) / total
            ranks = "  ".join(f"{_short(n, key)}:{plan[n] or '-'}" for n in sorted(names))
            table.add_row(str(group), f"{100 * share:5.1f} %", ranks)
        console.print(table)


def _short(name: str, grouped_by: int) -> str:
    """Within a layer row, name the projection; within a projection row, name the layer."""
    layer, projection = layer_and_projection(name)
    return projection if grouped_by == 0 else f"L{layer}"


def _heat_map(scores: Dict[str, ModuleScore], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = {layer_and_projection(n): s.fisher for n, s in scores.items()}
    layers = sorted({layer for layer, _ in cells})
    projections = sorted({projection for _, projection in cells})
    grid = torch.zeros(len(layers), len(projections))
    for (layer, projection), value in cells.items():
        grid[layers.index(layer), projections.index(projection)] = value
    fig, ax = plt.subplots(figsize=(2 + 0.7 * len(projections), 2.5 + 0.3 * len(layers)))
    image = ax.imshow((grid / grid.max().clamp(min=1e-30)).numpy(), aspect="auto", cmap="magma")
    ax.set(xticks=range(len(projections)), yticks=range(len(layers)), xlabel="projection", ylabel="layer",
           title="LoRA sensitivity (share of the largest)")
    ax.set_xticklabels(projections, rotation=45, ha="right")
    ax.set_yticklabels(layers)
    fig.colorbar(image)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
