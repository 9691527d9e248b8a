"""`python -m sidestep.export SOURCE [--format all] [--out DIR] [--dtype bf16] [--name NAME] [--merge]`.

SOURCE is a run dir, its `adapter/`, or one of its `checkpoints/step-N/` (a run stopped before its adapter was
written exports its newest checkpoint). Writes the adapter in each format that loads its type (see
adapters/files.py), e.g. for a checkpoint you liked better than the end, or a run made before a format existed;
with `--merge` also a complete ACE-Step variant folder with the adapter folded into its DiT.
"""

import argparse
import re
import sys
from pathlib import Path

from omegaconf import OmegaConf

from sidestep.adapters.attach import adapted_dit
from sidestep.adapters.files import DTYPES, FORMATS, peft_type_name, write_formats
from sidestep.adapters.kind import kind_of
from sidestep.adapters.merge import merge_into_variant
from sidestep.config.trust import allow_targets
from sidestep.errors import SidestepError
from sidestep.models.source import model_source
from sidestep.training.adapter_sources import open_source
from sidestep.ui.console import console, exit_on_user_error

MERGED_DIR = "merged"


def default_out(source) -> Path:
    """An adapter folder is rewritten in place; a checkpoint gets `<checkpoint>/adapter/`, a stopped run `<run>/adapter/`."""
    if source.step is None:
        return source.weights_file.parent
    return (source.path if source.path == source.run_dir else source.weights_file.parent) / "adapter"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sidestep.export", description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a run dir, its adapter/, or one of its checkpoints/step-N/")
    parser.add_argument("--format", choices=[*FORMATS, "all"], default="all")
    parser.add_argument("--out", type=Path, help="where to write (default: the adapter dir; for a checkpoint, "
                                                 "<checkpoint>/adapter)")
    parser.add_argument("--dtype", choices=list(DTYPES), help="of the exported tensors (default: the run's export.dtype)")
    parser.add_argument("--name", help="ComfyUI file and ACE-Step adapter name (default: the run's name, "
                                       "-stepN for a checkpoint)")
    parser.add_argument("--allow-target", action="append", default=[], metavar="NAME",
                        help="also build this model source the run's config names (one Side-Step does not ship); "
                             "repeatable")
    parser.add_argument("--merge", action="store_true", help="also write the base model with the adapter folded in, "
                                                             "as a complete ACE-Step variant folder")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        allow_targets(args.allow_target)
        if args.name is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", args.name):
            raise SidestepError(f"--name {args.name!r}: use letters, digits, - and _ only (it names files and a "
                                "PEFT adapter, which may not hold a dot)")
        source = open_source(args.source)
        name = args.name or re.sub(r"[^A-Za-z0-9_-]+", "-", source.name)
        run_dtype = OmegaConf.select(source.run_cfg, "export.dtype") if source.run_cfg is not None else None
        dtype = args.dtype or run_dtype or "bf16"
        out = args.out or default_out(source)
        formats = FORMATS if args.format == "all" else (args.format,)
        model = None
        if "comfyui" in formats and kind_of(source.adapter_config).needs_model(source.adapter_config):
            if source.run_cfg is None:
                console.print(f"{peft_type_name(source.adapter_config)}: its ComfyUI file is computed from the base model; "
                              "point at a folder inside its run dir to write it")
            else:
                model = adapted_dit(model_source(source.run_cfg.model), source.weights, source.adapter_config)
        written = write_formats(source.weights, source.adapter_config, out, name, dtype, formats, model)
        listed = ", ".join(written) or "no consumer format"
        console.print(f"wrote {listed} ({dtype}) as {name} to {out} (see {out / 'formats.json'})")
        if args.merge:
            if source.run_cfg is None:
                raise SidestepError(f"{args.source}: --merge needs a folder inside a run dir (its .hydra/config.yaml "
                                    "says which base model the adapter was trained on)")
            folder = merge_into_variant(model_source(source.run_cfg.model), source.weights, source.adapter_config,
                                        out / MERGED_DIR, name)
            console.print(f"merged model written to {folder} (a complete ACE-Step variant folder)")


if __name__ == "__main__":
    main(sys.argv[1:])
