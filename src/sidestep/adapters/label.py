"""How a run's saved config names its adapter in words, for the monitor and the report (no torch imported)."""

NAMES = {"Lora": "LoRA", "Lokr": "LoKr", "Loha": "LoHa", "Oft": "OFT"}


def adapter_words(cfg: dict) -> str:
    """`LoRA rank 16 / alpha 32`, `DoRA ...`, `LoKr ...`, or `OFT block size 32` (OFT ignores rank and alpha)."""
    adapter = cfg.get("adapter") or {}
    kind = str(adapter.get("_target_", "Lora")).rsplit(".", 1)[-1]
    if kind == "Oft":
        return f"OFT block size {adapter.get('block_size')}"
    name = "DoRA" if adapter.get("use_dora") else NAMES.get(kind, kind)
    alpha = adapter.get("alpha")
    return f"{name} rank {adapter.get('rank')} / alpha {alpha:g}" if isinstance(alpha, (int, float)) else \
        f"{name} rank {adapter.get('rank')}"
