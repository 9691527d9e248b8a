"""How a run's saved config names its adapter in words, for the monitor and the report (no torch imported): the
words come from the schema of the type its `_target_` names."""

from sidestep.config.parts import adapter_schema, ranked_words


def adapter_words(cfg: dict) -> str:
    """`LoRA rank 16 / alpha 32`, `DoRA ...`, `LoKr ...`, or `OFT block size 32` (OFT ignores rank and alpha)."""
    adapter = cfg.get("adapter") or {}
    schema = adapter_schema(adapter.get("_target_"))
    if schema is None:  # a type this Side-Step does not offer: its class name
        return ranked_words(str(adapter["_target_"]).rsplit(".", 1)[-1], adapter)
    return schema.words(adapter)
