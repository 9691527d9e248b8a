"""`python -m sidestep.export RUN_OR_ADAPTER [--format all] [--out DIR] [--merge]`: re-export a trained adapter.

Writes the adapter formats of DESIGN §6 again (e.g. for a run made before a format existed), and with `--merge`
folds the adapter into the run's base DiT and writes it in the original ACE-Step layout.
"""

import argparse
import shutil
import sys
from pathlib import Path

from sidestep.atomic import atomic_dir
from sidestep.errors import SidestepError
from sidestep.training.adapter_files import (
    FORMATS,
    WEIGHTS,
    merge_into,
    read_adapter,
    write_formats,
)
from sidestep.ui.console import console, exit_on_user_error

MERGED_DIR = "merged"


def find_adapter(source: Path) -> Path:
    for candidate in (source, source / "adapter"):
        if (candidate / WEIGHTS).is_file() and (candidate / "adapter_config.json").is_file():
            return candidate
    raise SidestepError(f"{source}: no adapter here (expected {WEIGHTS} and adapter_config.json, or a run dir with adapter/)")


def merge(run_dir: Path, adapter: Path, out: Path) -> Path:
    """The run's base DiT with the adapter folded in, as `out/merged/model.safetensors` in the original layout."""
    import torch
    from safetensors.torch import save_file

    from sidestep.config import prepare
    from sidestep.config.saved import load_saved
    from sidestep.models.checkpoints import locate
    from sidestep.models.dit import build_dit
    from sidestep.models.keymap import NULL_CONDITION_KEY, diffusers_key_to_decoder

    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise SidestepError(f"{run_dir}: --merge needs the run dir (with .hydra/config.yaml) to know the base model")
    cfg = prepare(load_saved(saved))
    dit = build_dit(cfg.model, torch.float32)
    weights, config = read_adapter(adapter)
    merged = merge_into(dit.transformer.state_dict(), weights, config)
    tensors = {diffusers_key_to_decoder(k): v.contiguous() for k, v in merged.items()}
    tensors[NULL_CONDITION_KEY] = dit.null_condition_emb.contiguous()
    with atomic_dir(out / MERGED_DIR) as tmp:
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        if cfg.model.variant != "tiny":
            folder = locate(cfg.model.checkpoint_dir, cfg.model.variant)
            if folder.layout == "original":
                shutil.copy(folder.config_file, tmp / "config.json")
    return out / MERGED_DIR / "model.safetensors"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sidestep.export", description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a run dir, or an adapter dir holding adapter_model.safetensors")
    parser.add_argument("--format", choices=[*FORMATS, "all"], default="all")
    parser.add_argument("--out", type=Path, help="where to write (default: the adapter dir itself)")
    parser.add_argument("--merge", action="store_true", help="also write the base DiT with the adapter merged in")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        adapter = find_adapter(args.source)
        out = args.out or adapter
        weights, config = read_adapter(adapter)
        formats = FORMATS if args.format == "all" else (args.format,)
        write_formats(weights, config, out, formats)
        console.print(f"wrote {', '.join(formats)} to {out}")
        if args.merge:
            console.print(f"merged DiT written to {merge(args.source, adapter, out)}")


if __name__ == "__main__":
    main(sys.argv[1:])
