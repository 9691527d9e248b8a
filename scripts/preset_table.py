"""Print the README's VRAM preset table from conf/vram/*.yaml, so the docs say exactly what the files set.

    python scripts/preset_table.py        # tests/test_docs.py checks the README carries this output verbatim
"""

from pathlib import Path

from omegaconf import OmegaConf

VRAM = Path(__file__).resolve().parents[1] / "conf" / "vram"
COLUMNS = [
    ("rank / alpha", lambda c: f"{c.lora.rank} / {c.lora.alpha}"),
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


if __name__ == "__main__":
    print(table())
