"""`python -m sidestep.sample`'s work: open the adapter, build the pipeline around the model it was trained on, and
render each prompt (with and without the adapter for `compare=true`), every version at one length."""

import logging
from pathlib import Path
from typing import List, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from peft import set_peft_model_state_dict

from sidestep.adapters.files import peft_type_name
from sidestep.adapters.kind import kind_of
from sidestep.config.schema import SamplePrompt
from sidestep.data.dataset import list_sample_files
from sidestep.data.loader import dataset_folder
from sidestep.data.samples import read_sample
from sidestep.devices import compute_dtype, pick_device
from sidestep.digest import file_hash
from sidestep.errors import ConfigError, SidestepError
from sidestep.models.checkpoints import option_name
from sidestep.models.source import model_source
from sidestep.sampling import prompts as prompt_sources
from sidestep.sampling.render import build_pipeline, move_helpers, render, render_settings, save_sample, slug
from sidestep.training.adapter_sources import Source, open_source
from sidestep.training.live_samples import MAX_DEFAULT_SECONDS, songs_duration

log = logging.getLogger("sidestep.sample")


def render_samples(cfg: DictConfig, overrides: List[str], out: Path, plain: bool) -> List[Path]:
    source = open_source(Path(cfg.source))
    if not kind_of(source.adapter_config).scalable and any(s != 1.0 for s in [cfg.strength, *cfg.compare_strengths]):
        raise ConfigError(f"strength: an {peft_type_name(source.adapter_config)} adapter plays at strength 1 only (PEFT "
                          "cannot scale it); leave strength=1 and compare_strengths empty")
    model_cfg = _model(cfg, source.run_cfg, overrides)
    model = model_source(model_cfg)
    model.settle(model_cfg)
    prompts = _prompts(cfg, source)
    cfg.duration = cfg.duration if cfg.duration is not None else run_duration(source.run_cfg)

    device = pick_device(cfg.device, "device")
    dtype = compute_dtype(cfg.precision, device.type)
    transformer = model.dit(dtype).transformer
    transformer.add_adapter(source.adapter_config)
    result = set_peft_model_state_dict(transformer, source.weights)
    if result.unexpected_keys:
        raise ConfigError(f"source: the adapter in {source.path} does not fit model={option_name(model_cfg.variant)} "
                          f"({result.unexpected_keys[0]}); give the model it was trained on")
    pipe = build_pipeline(model, transformer.to(device).eval(), dtype)
    move_helpers(pipe, device)
    pipe.set_progress_bar_config(disable=plain)

    settings = render_settings(cfg, model_cfg)
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
    return written


def run_duration(run_cfg: Optional[DictConfig]) -> float:
    """`duration=null`: as long as the run's own samples (its `sample.duration`, else its songs' median length, at
    most 30 s), so a comparison sits beside the training samples at their length; 30 s outside a run."""
    if run_cfg is None:
        return MAX_DEFAULT_SECONDS
    if OmegaConf.select(run_cfg, "sample.duration") is not None:
        return float(run_cfg.sample.duration)
    try:
        frames = [read_sample(f)["target_latents"].shape[0] for f in list_sample_files(dataset_folder(run_cfg))]
    except SidestepError as err:
        log.warning("the run's songs cannot be read (%s): rendering %g s; set duration=... to choose", err,
                    MAX_DEFAULT_SECONDS)
        return MAX_DEFAULT_SECONDS
    return songs_duration(frames)


def _prompts(cfg: DictConfig, source: Source) -> List[SamplePrompt]:
    if cfg.prompt is not None:
        return [SamplePrompt(cfg.prompt, cfg.lyrics, cfg.language, cfg.bpm, cfg.keyscale, cfg.timesignature)]
    if cfg.prompts is not None:
        return prompt_sources.from_file(Path(cfg.prompts))
    if source.run_cfg is not None:
        return prompt_sources.from_dataset(dataset_folder(source.run_cfg), cfg.count)
    raise ConfigError("prompt: not set, and the source is outside a run, so there is no training data to take "
                      "captions from; give prompt=... or prompts=<file.yaml>")


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
