"""`python -m sidestep.sample <run dir | adapter dir | checkpoint dir> prompt="warm lofi piano" [compare=true]`:
render what an adapter plays, as 48 kHz stereo WAVs with a JSON of every setting beside each.

`compare=true` renders the same prompt and seed without the adapter too (and at `compare_strengths`), so the
difference heard is the adapter's alone. Files go to `<run>/samples/<time>/` unless `hydra.run.dir` says otherwise.
"""

import logging
import sys
from pathlib import Path
from typing import List, Optional

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from peft import set_peft_model_state_dict

from sidestep.adapters.files import peft_type_name
from sidestep.adapters.kind import kind_of
from sidestep.config import register_schemas
from sidestep.config.checks import prepare_sample
from sidestep.config.schema import SamplePrompt
from sidestep.config.trust import take_allow_flags
from sidestep.data.loader import dataset_folder
from sidestep.devices import compute_dtype, pick_device
from sidestep.digest import file_hash
from sidestep.errors import ConfigError
from sidestep.models.source import model_source
from sidestep.sampling import prompts as prompt_sources
from sidestep.sampling.render import build_pipeline, move_helpers, render, render_settings, save_sample, slug
from sidestep.training.adapter_sources import open_source, samples_dir
from sidestep.ui.console import exit_on_user_error, use_plain

log = logging.getLogger("sidestep.sample")
register_schemas()
OmegaConf.register_new_resolver("samples_dir", samples_dir, replace=True)


@hydra.main(version_base="1.3", config_path="pkg://sidestep.conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        plain = use_plain(cfg.ui.plain)
        cfg = prepare_sample(cfg)
        source = open_source(Path(cfg.source))
        if not kind_of(source.adapter_config).scalable and any(s != 1.0 for s in [cfg.strength, *cfg.compare_strengths]):
            raise ConfigError(f"strength: an {peft_type_name(source.adapter_config)} adapter plays at strength 1 only (PEFT "
                              "cannot scale it); leave strength=1 and compare_strengths empty")
        model_cfg = _model(cfg, source.run_cfg, list(HydraConfig.get().overrides.task))
        model = model_source(model_cfg)
        model.settle(model_cfg)

        if cfg.prompt is not None:
            prompts = [SamplePrompt(cfg.prompt, cfg.lyrics, cfg.language, cfg.bpm, cfg.keyscale, cfg.timesignature)]
        elif cfg.prompts is not None:
            prompts = prompt_sources.from_file(Path(cfg.prompts))
        elif source.run_cfg is not None:
            prompts = prompt_sources.from_dataset(dataset_folder(source.run_cfg), cfg.count)
        else:
            raise ConfigError("prompt: not set, and the source is outside a run, so there is no training data to "
                              "take captions from; give prompt=... or prompts=<file.yaml>")

        device = pick_device(cfg.device, "device")
        dtype = compute_dtype(cfg.precision, device.type)
        transformer = model.dit(dtype).transformer
        transformer.add_adapter(source.adapter_config)
        result = set_peft_model_state_dict(transformer, source.weights)
        if result.unexpected_keys:
            raise ConfigError(f"source: the adapter in {source.path} does not fit model={model_cfg.variant} "
                              f"({result.unexpected_keys[0]}); give the model it was trained on")
        pipe = build_pipeline(model, transformer.to(device).eval(), dtype)
        move_helpers(pipe, device)
        pipe.set_progress_bar_config(disable=plain)

        settings = render_settings(cfg, model_cfg)
        out = Path(HydraConfig.get().runtime.output_dir)
        adapter = {"adapter": str(source.weights_file), "adapter_sha256": file_hash(source.weights_file)}
        common = {"model": model_cfg.variant, "checkpoint_dir": model_cfg.checkpoint_dir, "source": str(source.path)}
        written = []
        with torch.inference_mode():
            for i, prompt in enumerate(prompts):
                for strength, suffix in _versions(cfg):
                    audio = render(pipe, prompt, settings, strength)
                    record = {**common, "strength": strength or 0.0, **(adapter if strength is not None else {})}
                    written.append(save_sample(audio, out / f"{i}_{slug(prompt)}{suffix}", prompt, settings, record))
                    log.info("wrote %s", written[-1])
        log.info("%d samples in %s", len(written), out)


def _model(cfg: DictConfig, run_cfg: Optional[DictConfig], overrides: List[str]) -> DictConfig:
    """The model the adapter was trained on (the run's), with any `model.*` given on the command line applied
    (say the checkpoints folder moved); `model=<variant>` or a source outside a run uses the composed one."""
    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    if run_cfg is None or "model" in keys:
        return cfg.model
    model = run_cfg.model
    for key in keys:
        if key.startswith("model."):
            OmegaConf.update(model, key[len("model."):], OmegaConf.select(cfg, key), merge=False)
    return model


def _versions(cfg: DictConfig) -> List[tuple]:
    """(strength or None for no adapter, file-name suffix) for each version of a prompt to render."""
    if not cfg.compare:
        return [(cfg.strength, "")]
    extra = [(s, f"_strength{s:g}".replace(".", "p")) for s in cfg.compare_strengths if s != cfg.strength]
    return [(None, "_without"), (cfg.strength, "_with"), *extra]


def source_from_argv(argv: List[str]) -> List[str]:
    """`sample RUN key=value ...` -> `sample source='RUN' key=value ...` (Hydra takes only key=value)."""
    first: Optional[str] = argv[1] if len(argv) > 1 else None
    if first is None or "=" in first or first.startswith("-"):
        return argv
    return [argv[0], f"source='{Path(first).expanduser().resolve().as_posix()}'", *argv[2:]]


if __name__ == "__main__":
    with exit_on_user_error():
        sys.argv = source_from_argv(take_allow_flags(sys.argv))
    main()
