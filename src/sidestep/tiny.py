"""`python -m sidestep.tiny DIR [--variant turbo|base|sft|xl-turbo|xl-base|xl-sft]`: write the tiny random ACE-Step stack as a complete
`checkpoints/` folder, to try preprocessing, training and sampling end to end without downloading weights.

The writing takes a few seconds; loading torch, diffusers and transformers before it takes most of the time (10 s to
a minute, the most on a first run after installing), so the command says so before it starts loading them.
"""

import argparse
import sys
from pathlib import Path

from sidestep.config.choices import TINY_VARIANTS


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sidestep.tiny", description=(
        "Write a complete, tiny, random ACE-Step checkpoints/ folder (a variant's config.json, model.safetensors and "
        "silence_latent.pt, vae/, the text encoder): the music it makes is noise, but every command runs on it."))
    parser.add_argument("out", type=Path, help="the checkpoints folder to write (then: model.checkpoint_dir=OUT)")
    parser.add_argument("--variant", default="turbo", choices=TINY_VARIANTS,
                        help="which variant folder (default: turbo; xl-*: a DiT wider than its condition, as the XL's)")
    args = parser.parse_args(argv)
    out = args.out.expanduser().resolve()
    print(f"writing a tiny checkpoints folder to {out}: loading torch, diffusers and transformers first (10 s to a "
          "minute), then a few seconds of writing", flush=True)
    # imported after the notice: loading them is what takes the time
    from hydra import compose, initialize_config_module

    from sidestep.config import register_schemas
    from sidestep.models.checkpoints import option_name
    from sidestep.models.tiny import write_checkpoints

    register_schemas()
    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        model_cfg = compose(config_name="train", overrides=["model=tiny"]).model
    folder = write_checkpoints(model_cfg, out, args.variant)
    print(f"wrote {folder}, vae/ and the text encoder; use them with model={option_name(args.variant)} "
          f"model.checkpoint_dir={out}")


if __name__ == "__main__":
    main(sys.argv[1:])
