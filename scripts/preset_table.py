"""Print the README's preset tables from the composed config of each `vram=` and `experiment=` option, so the docs
say exactly what a preset sets, and the adapter sizes they give on the real 2B DiT.

    python scripts/preset_table.py        # tests/test_docs.py checks the README carries this output verbatim
"""

from functools import lru_cache
from pathlib import Path
from typing import Tuple

import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf

from sidestep.adapters.attach import trainable_parameters
from sidestep.config import as_container, flatten, prepare, register_schemas
from sidestep.config.parts import OPTIMIZER_SCHEMAS
from sidestep.config.schema import ALPHA_PER_RANK, LATENT_FPS
from sidestep.recipes import leaves_model_and_data
from sidestep.training.memory import ACESTEP_HELPERS, CUDA_CONTEXT, GB, PRESET_CARDS_GIB, WHOLE_SONG_SECONDS, predict

CONF = Path(__file__).resolve().parents[1] / "conf"
VRAM, EXPERIMENT = CONF / "vram", CONF / "experiment"
OPTIMIZER_NAMES = {schema._target_: name for name, schema in OPTIMIZER_SCHEMAS.items()}
COLUMNS = [
    ("DiT weights", lambda c: c.model.quantize or "compute dtype"),
    ("rank / alpha", lambda c: f"{c.adapter.rank} / {c.adapter.alpha or ALPHA_PER_RANK * c.adapter.rank:g}"),
    ("targets", lambda c: ", ".join(c.adapter.target_modules)),
    ("batch x accumulation", lambda c: f"{c.trainer.batch_size} x {c.trainer.gradient_accumulation}"),
    ("gradient checkpointing", lambda c: "on" if c.trainer.gradient_checkpointing else "off"),
    ("crop", lambda c: "whole songs" if c.data.crop_seconds is None else f"{c.data.crop_seconds:g} s"),
]
SKIPPED = ("hydra.", "run.name")  # not training settings


@lru_cache(maxsize=None)
def composed(*overrides: str) -> DictConfig:
    register_schemas()
    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@lru_cache(maxsize=None)
def parameters(targets: Tuple[str, ...], rank: int) -> int:
    """PEFT's count on the 2B DiT's shapes for these targets at this rank (both attention blocks)."""
    cfg = OmegaConf.merge(composed(), {"adapter": {"target_modules": list(targets), "rank": rank,
                                                   "alpha": ALPHA_PER_RANK * rank}})
    return trainable_parameters(cfg)


def table() -> str:
    lines = ["| `vram=` | optimizer | " + " | ".join(name for name, _ in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 2) + "|"]
    for path in sorted(VRAM.glob("*.yaml"), key=lambda p: int(p.stem.split("gb")[0])):
        cfg = composed(f"vram={path.stem}")
        cells = [f"`{path.stem}`", OPTIMIZER_NAMES[cfg.optimizer._target_]] + [render(cfg) for _, render in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def experiment_table() -> str:
    """One column per preset (a recipe that leaves model and data to you, as the wizard offers them), one row per
    group choice or key any of them changes from the defaults; blank: left at the default."""
    default = composed()
    recipes = {p.stem: composed(f"experiment={p.stem}") for p in sorted(EXPERIMENT.glob("*.yaml"))
               if leaves_model_and_data(p.stem, CONF)}
    recipes = dict(sorted(recipes.items(), key=lambda item: (item[1].adapter.rank, item[0])))  # by size
    base = flatten(as_container(default))
    rows = {}
    for name, cfg in recipes.items():
        optimizer = OPTIMIZER_NAMES[cfg.optimizer._target_]
        if optimizer != OPTIMIZER_NAMES[default.optimizer._target_]:
            rows.setdefault("`optimizer=`", {})[name] = optimizer
    for name, cfg in recipes.items():
        for key, value in flatten(as_container(cfg)).items():
            if value != base.get(key) and not key.startswith(SKIPPED) and not key.startswith("optimizer._target_"):
                rows.setdefault(f"`{key}`", {})[name] = value
    lines = ["| | " + " | ".join(f"`{name}`" for name in recipes) + " |", "|---" * (len(recipes) + 1) + "|"]
    for key, values in rows.items():
        lines.append(f"| {key} | " + " | ".join(_cell(values[n]) if n in values else "" for n in recipes) + " |")
    return "\n".join(lines)


def adapter_size_table() -> str:
    """Adapter sizes at rank 64 for each preset's targets, on the 2B DiT's shapes (24 layers, hidden 2048, 16 / 8
    heads of 128), counted by PEFT: one consumer's file, and the whole `adapter/` (four copies), in bf16 and fp32.
    MB = 10^6 bytes; headers add a few kB."""
    presets = [("default (no preset)", ())] + [
        (f"`{option}={path.stem}`", (f"{option}={path.stem}",))
        for folder, option in ((EXPERIMENT, "experiment"), (VRAM, "vram")) for path in sorted(folder.glob("*.yaml"))
        if option == "vram" or leaves_model_and_data(path.stem, CONF)]
    lines = ["| preset | targets | parameters at rank 64 | one file, bf16 | one file, fp32 | all four, bf16 | all four, fp32 "
             "| one file at the preset's rank, bf16 |", "|---|---|---|---|---|---|---|---|"]
    for name, overrides in presets:
        cfg = composed(*overrides)
        targets, rank = tuple(map(str, cfg.adapter.target_modules)), cfg.adapter.rank
        params = parameters(targets, 64)
        sizes = [f"{params * width * copies / 1e6:,.0f} MB" for copies in (1, 4) for width in (2, 4)]
        own = f"{parameters(targets, rank) * 2 / 1e6:,.0f} MB (rank {rank})"
        lines.append(f"| {name} | {', '.join(cfg.adapter.target_modules)} | {params:,} | " + " | ".join(sizes) + f" | {own} |")
    return "\n".join(lines)


def model_fit_table() -> str:
    """Each `vram=` preset's predicted peak (training/memory.py, bf16 weights on a GPU, at the preset's crop; whole
    songs: 4 minutes) on the 2B DiT and on the XL one, and whether it fits the preset's card beside the CUDA context."""
    lines = ["| `vram=` | DiT weights | crop | 2B (`turbo`, `base`, `sft`) | XL (`xl_turbo`, `xl_base`, `xl_sft`) |",
             "|---|---|---|---|---|"]
    for path in sorted(VRAM.glob("*.yaml"), key=lambda p: int(p.stem.split("gb")[0])):
        cells = []
        for model in ("turbo", "xl_turbo"):
            cfg = prepare(composed(f"model={model}", "data.dataset_dir=.", f"vram={path.stem}"))
            seconds = cfg.data.crop_seconds or WHOLE_SONG_SECONDS
            one_layer = OmegaConf.merge(cfg, {"model": {"arch": {"num_hidden_layers": 1}}})  # every layer alike
            trainable = trainable_parameters(one_layer) * cfg.model.arch.num_hidden_layers
            peak = predict(cfg, torch.bfloat16, int(seconds * LATENT_FPS), helpers=ACESTEP_HELPERS, trainable=trainable).peak
            fits = "fits" if peak + CUDA_CONTEXT <= PRESET_CARDS_GIB[path.stem] * GB else "does not fit"
            cells.append(f"{peak / GB:.1f} GB: {fits}")
        lines.append(f"| `{path.stem}` | {cfg.model.quantize or 'bf16'} | {seconds:g} s | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    print(table())
    print()
    print(experiment_table())
    print()
    print(adapter_size_table())
    print()
    print(model_fit_table())
