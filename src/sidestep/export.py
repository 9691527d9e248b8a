"""`python -m sidestep.export SOURCE [--format all] [--out DIR] [--dtype bf16] [--name NAME] [--merge]`.

SOURCE is a run dir, its `adapter/`, or one of its `checkpoints/step-N/` (a run stopped before its adapter was
written exports its newest checkpoint). Writes the adapter in each format that loads its type (see
adapters/files.py), e.g. for a checkpoint you liked better than the end, or a run made before a format existed;
with `--merge` also a complete ACE-Step variant folder with the adapter folded into its DiT.
"""

import argparse
import sys
from pathlib import Path

from sidestep.config.choices import EXPORT_FORMATS, ExportDtype
from sidestep.config.trust import allow_targets
from sidestep.ui.console import exit_on_user_error


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sidestep.export", description=(
        "Write an adapter (a run's, or one of its checkpoints) in the files each program loads: PEFT/diffusers, the "
        "diffusers pipeline, ACE-Step and ComfyUI, listed in formats.json; --merge also folds it into the base model."))
    parser.add_argument("source", type=Path, help="a run dir, its adapter/, or one of its checkpoints/step-N/")
    parser.add_argument("--format", choices=[*EXPORT_FORMATS, "all"], default="all",
                        help="which program's files (default: all that load the adapter's type)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="the adapter folder to write, laid out as a run's "
                        "adapter/ (default: the adapter dir itself; for a checkpoint, <run>/adapters/step-N, where "
                        "training keeps each sampled step's adapter; never inside checkpoints/, which training prunes)")
    parser.add_argument("--dtype", choices=[d.value for d in ExportDtype],
                        help="of the exported tensors (default: the run's export.dtype)")
    parser.add_argument("--name", help="ComfyUI file and ACE-Step adapter name (default: the run's name, "
                                       "-stepN for a checkpoint)")
    parser.add_argument("--allow-target", action="append", default=[], metavar="NAME",
                        help="also build this model source the run's config names (one Side-Step does not ship); "
                             "repeatable")
    parser.add_argument("--merge", action="store_true", help="also write the base model with the adapter folded in, "
                                                             "as a complete ACE-Step variant folder")
    args = parser.parse_args(argv)
    # imported once the arguments parsed: it loads torch, which --help does not need
    from sidestep.training.adapter_export import export_adapter

    with exit_on_user_error():
        allow_targets(args.allow_target)
        formats = EXPORT_FORMATS if args.format == "all" else (args.format,)
        export_adapter(args.source, formats, args.out, args.dtype, args.name, args.merge)


if __name__ == "__main__":
    main(sys.argv[1:])
