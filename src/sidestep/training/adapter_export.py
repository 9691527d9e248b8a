"""`python -m sidestep.export`'s work: write an adapter (a run's, or one of its checkpoints) in the files each
program loads, from its full-precision weights, and optionally fold it into its base model."""

import re
from pathlib import Path
from typing import Optional, Sequence

import torch
from omegaconf import OmegaConf

from sidestep.adapters.attach import adapted_dit
from sidestep.adapters.files import peft_type_name, write_formats
from sidestep.adapters.kind import kind_of
from sidestep.adapters.merge import merge_into_variant
from sidestep.errors import SidestepError
from sidestep.models.source import model_source
from sidestep.training.adapter_facts import at_step, header_facts
from sidestep.training.adapter_sources import Source, full_precision_weights, open_source
from sidestep.training.checkpoint import CHECKPOINTS, export_dir
from sidestep.training.step_adapters import card_samples
from sidestep.ui.console import say

MERGED_DIR = "merged"


def default_out(source: Source) -> Path:
    """An adapter folder is rewritten in place; a checkpoint gets `<run>/adapters/step-N/` (out of the checkpoints
    training prunes, where the run keeps each sampled step's adapter), a stopped run `<run>/adapter/`."""
    if source.step is None:
        return source.weights_file.parent
    return source.path / "adapter" if source.path == source.run_dir else export_dir(source.weights_file.parent)


def _int(text: Optional[str]) -> Optional[int]:
    return int(text) if text and text.isdigit() else None


def check_out(out: Path, source: Source) -> None:
    """Nothing is written into a run's checkpoints/: training deletes old checkpoints with whatever they hold."""
    if source.run_dir is not None and out.expanduser().resolve().is_relative_to(source.run_dir / CHECKPOINTS):
        raise SidestepError(f"--out {out}: inside {source.run_dir / CHECKPOINTS}, whose old checkpoints training "
                            f"deletes (trainer.keep_checkpoints); write elsewhere, e.g. {default_out(source)}")


def export_adapter(path: Path, formats: Sequence[str], out: Optional[Path], dtype: Optional[str],
                   name: Optional[str], merge: bool) -> None:
    """Write `path`'s adapter in `formats` to `out` (default: see `default_out`) as `dtype` (default: the run's
    `export.dtype`), named `name` (default: the run's); with `merge`, also the merged variant folder."""
    if name is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise SidestepError(f"--name {name!r}: use letters, digits, - and _ only (it names files and a "
                            "PEFT adapter, which may not hold a dot)")
    source = open_source(path)
    name = name or re.sub(r"[^A-Za-z0-9_-]+", "-", source.name)
    run_dtype = OmegaConf.select(source.run_cfg, "export.dtype") if source.run_cfg is not None else None
    dtype = dtype or run_dtype or "bf16"
    out = out or default_out(source)
    check_out(out, source)
    weights = full_precision_weights(source)
    stored = {str(v.dtype).removeprefix("torch.") for v in weights.values() if v.dtype != torch.float32}
    if dtype == "fp32" and stored:
        say(f"{source.weights_file}: no float32 copy of these weights was found (the newest checkpoint of "
                      f"their run holds one), so the fp32 files hold its {', '.join(sorted(stored))} values")
    model = None
    if "comfyui" in formats and kind_of(source.adapter_config).needs_model(source.adapter_config):
        if source.run_cfg is None:
            say(f"{peft_type_name(source.adapter_config)}: its ComfyUI file is computed from the base model; "
                          "point at a folder inside its run dir to write it")
        else:
            model = adapted_dit(model_source(source.run_cfg.model), weights, source.adapter_config)
    facts = header_facts(source.weights_file)
    step = source.step if source.step is not None else _int(facts.get("ss_steps"))
    facts = facts if source.step is None else at_step(facts, source.step)
    samples = card_samples(source.run_dir, step, out) if source.run_dir is not None and step is not None else []
    written = write_formats(weights, source.adapter_config, out, name, dtype, formats, model, facts, samples)
    listed = ", ".join(written) or "no consumer format"
    say(f"wrote {listed} ({dtype}) as {name} to {out} (see {out / 'formats.json'})")
    if merge:
        if source.run_cfg is None:
            raise SidestepError(f"{path}: --merge needs a folder inside a run dir (its .hydra/config.yaml "
                                "says which base model the adapter was trained on)")
        folder = merge_into_variant(model_source(source.run_cfg.model), weights, source.adapter_config,
                                    out / MERGED_DIR, name)
        say(f"merged model written to {folder} (a complete ACE-Step variant folder)")
