"""Adapters: which DiT modules train (`targets`), what an adapter type is (`kind`, one module per type such as
`lora`), attaching one to a model (`attach`), the files each consumer loads (`files`), per-module ranks
(`rank_map`) and folding an adapter into the base weights (`merge`)."""
