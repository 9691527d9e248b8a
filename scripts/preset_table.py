"""Print the README's preset tables from conf/vram/*.yaml and conf/experiment/*.yaml, so the docs say exactly
what the files set, and the adapter sizes they give on the real 2B DiT.

    python scripts/preset_table.py        # tests/test_docs.py checks the README carries this output verbatim
"""

from pathlib import Path

from omegaconf import OmegaConf

from sidestep.config.schema import ALPHA_PER_RANK

CONF = Path(__file__).resolve().parents[1] / "conf"
VRAM, EXPERIMENT = CONF / "vram", CONF / "experiment"
COLUMNS = [
    ("rank / alpha", lambda c: f"{c.lora.rank} / {c.lora.get('alpha') or ALPHA_PER_RANK * c.lora.rank:g}"),
    ("targets", lambda c: ", ".join(c.lora.target_modules)),
    ("batch x accumulation", lambda c: f"{c.trainer.batch_size} x {c.trainer.gradient_accumulation}"),
    ("gradient checkpointing", lambda c: "on" if c.trainer.gradient_checkpointing else "off"),
    ("crop", lambda c: "whole songs" if c.data.crop_seconds is None else f"{c.data.crop_seconds} s"),
]


def table() -> str:
    lines = ["| `vram=` | optimizer | " + " | ".join(name for name, _ in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 2) + "|"]
    for path in sorted(VRAM.glob("*.yaml"), key=lambda p: int(p.stem.split("gb")[0])):
        cfg = OmegaConf.load(path)
        optimizer = next(d["override /optimizer"] for d in cfg.defaults if "override /optimizer" in d)
        cells = [f"`{path.stem}`", optimizer] + [render(cfg) for _, render in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def experiment_table() -> str:
    """One column per preset (a recipe that leaves model and data to you, as the wizard offers them), one row per
    group choice or key any of them sets; blank: not set."""
    from sidestep.recipes import leaves_model_and_data

    found = {p.stem: OmegaConf.to_container(OmegaConf.load(p)) for p in EXPERIMENT.glob("*.yaml")
             if leaves_model_and_data(p.stem, CONF)}
    recipes = dict(sorted(found.items(), key=lambda item: (item[1].get("lora", {}).get("rank", 0), item[0])))  # by size
    rows = {}
    for name, recipe in recipes.items():  # group choices first, then keys, each in the order the files have them
        for entry in recipe.pop("defaults", []):
            for key, option in entry.items():
                rows.setdefault(f"`{key.split('/')[-1]}=`", {})[name] = option
    for name, recipe in recipes.items():
        for key, value in _leaves(recipe):
            rows.setdefault(f"`{key}`", {})[name] = value
    lines = ["| | " + " | ".join(f"`{name}`" for name in recipes) + " |", "|---" * (len(recipes) + 1) + "|"]
    for key, values in rows.items():
        lines.append(f"| {key} | " + " | ".join(_cell(values[n]) if n in values else "" for n in recipes) + " |")
    return "\n".join(lines)


def adapter_size_table() -> str:
    """Adapter sizes at rank 64 for each preset's targets, from the 2B DiT's shapes (24 layers, hidden 2048, 16 / 8
    heads of 128): one consumer's file, and the whole `adapter/` (four copies), in bf16 and fp32. MB = 10^6 bytes;
    headers add a few kB."""
    from omegaconf import OmegaConf

    from sidestep.config.schema import ArchConfig
    from sidestep.training.lora import lora_parameter_count

    arch, attention = OmegaConf.structured(ArchConfig), OmegaConf.create({"blocks": ["self_attn", "cross_attn"]})
    default = OmegaConf.load(CONF / "train.yaml").lora
    presets = [("default (no preset)", default)]
    for folder, option in ((EXPERIMENT, "experiment"), (VRAM, "vram")):
        for path in sorted(folder.glob("*.yaml")):
            lora = OmegaConf.select(OmegaConf.load(path), "lora")
            if lora is not None and "target_modules" in lora:
                presets.append((f"`{option}={path.stem}`", lora))
    lines = ["| preset | targets | parameters at rank 64 | one file, bf16 | one file, fp32 | all four, bf16 | all four, fp32 "
             "| one file at the preset's rank, bf16 |", "|---|---|---|---|---|---|---|---|"]
    for name, lora in presets:
        def count(rank):
            settings = OmegaConf.create({"rank": rank, "target_modules": list(lora.target_modules), "rank_map": None})
            return lora_parameter_count(arch, settings, attention)

        params = count(64)
        sizes = [f"{params * width * copies / 1e6:,.0f} MB" for copies in (1, 4) for width in (2, 4)]
        own = f"{count(lora.rank) * 2 / 1e6:,.0f} MB (rank {lora.rank})"
        lines.append(f"| {name} | {', '.join(lora.target_modules)} | {params:,} | " + " | ".join(sizes) + f" | {own} |")
    return "\n".join(lines)


def _leaves(node: dict, prefix: str = ""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


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
