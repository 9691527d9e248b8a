"""The checks run on a composed config before anything heavy is built: one `ConfigError` naming the key."""

import logging
import math
import re
from pathlib import Path
from typing import Dict, Optional, Tuple

from omegaconf import DictConfig, OmegaConf, open_dict

from sidestep.config.build import build
from sidestep.config.containers import as_container, flatten
from sidestep.config.data_sources import data_schema
from sidestep.config.parts import ADAPTER_SCHEMAS, knobs_of
from sidestep.config.renamed_keys import renamed_config
from sidestep.config.run_name import RUN_NAME
from sidestep.config.schema import (
    ALPHA_PER_RANK,
    CHOSEN_BY_TARGET,
    LATENT_FPS,
    AnalyzeConfig,
    PreprocessConfig,
    SampleConfig,
    TrainConfig,
    option_name,
)
from sidestep.config.trust import check_built_targets, user_allowed
from sidestep.errors import ConfigError

log = logging.getLogger("sidestep")

DEVICE_PATTERN = re.compile(r"auto|cpu|mps|xpu|cuda(:\d+)?")
COMPILE_MODES = ("false", "blocks", "full")  # a string, not an enum: the command line's `false` is a boolean
MAX_SEED = 2**32 - 1
MAX_WORKERS = 64  # data-loader processes; more is a typo, not a machine  # numpy's seeds are 32-bit; Accelerate's set_seed seeds numpy too
RETIRED_KEYS = ("model.data_proportion",)  # ACE-Step's loss forces r = t, so this never had an effect


def projection_shapes(arch: DictConfig) -> Dict[str, Tuple[int, int]]:
    """(in, out) features of each projection LoRA can target, from the DiT's architecture."""
    q_out, kv_out = arch.num_attention_heads * arch.head_dim, arch.num_key_value_heads * arch.head_dim
    h, ff = arch.hidden_size, arch.intermediate_size
    return {"q_proj": (h, q_out), "k_proj": (h, kv_out), "v_proj": (h, kv_out), "o_proj": (q_out, h),
            "gate_proj": (h, ff), "up_proj": (h, ff), "down_proj": (ff, h)}


def typed(cfg: DictConfig) -> DictConfig:
    """Re-attach the schema to a config that lost it (a rerun from a saved `config.yaml` is a plain dict)."""
    cfg = renamed_config(cfg)
    for key in RETIRED_KEYS:  # saved by an older Side-Step: dropped, not refused
        node, _, leaf = key.rpartition(".")
        if isinstance(OmegaConf.select(cfg, node), DictConfig) and leaf in OmegaConf.select(cfg, node):
            with open_dict(cfg):
                OmegaConf.select(cfg, node).pop(leaf)
            log.info("%s is no longer a setting (it never changed training); ignored", key)
    check_built_targets(cfg)
    schema = OmegaConf.structured(TrainConfig)
    for group, schemas in CHOSEN_BY_TARGET.items():
        if OmegaConf.select(cfg, f"{group}._target_") is None:  # saved before the group existed: its first option
            with open_dict(cfg):                                  # was the only one (`lora.*` may be there already)
                cfg[group] = {**(cfg.get(group) or {}), "_target_": next(iter(schemas.values()))._target_}
        target = OmegaConf.select(cfg, f"{group}._target_")
        by_target = {s._target_: s for s in schemas.values()}
        if target not in by_target and target in user_allowed():
            continue  # the user's own part (--allow-target): typed by the group's base schema
        if target not in by_target:
            raise ConfigError(f"{group}._target_={target!r} is not a known {group}; pick {group}=" + "|".join(schemas))
        schema[group] = OmegaConf.structured(by_target[target])
        if group == "data":
            _drop_other_options_nulls(cfg[group], schema[group])
    _drop_knobs_the_type_lacks(cfg, schema.adapter)
    return _merge(schema, cfg)


def _drop_other_options_nulls(node: DictConfig, schema: DictConfig) -> None:
    """An older Side-Step saved both data sources' keys in one schema (`data.synthetic: null` beside a folder): a
    null key the chosen source lacks said nothing, and goes."""
    with open_dict(node):
        for key in [k for k in node if k not in schema and node[k] is None]:
            node.pop(key)


def _check_keep_best(cfg: DictConfig) -> None:
    """EMA, evaluation cadence, early stopping and `best`: what acts on the held-out loss needs a held-out set."""
    tr, held_out = cfg.trainer, cfg.data.val_fraction > 0
    decay, stop = tr.ema.decay, tr.early_stop
    _check(decay is None or 0.0 < decay < 1.0, "trainer.ema.decay", f"must be in (0, 1) or null (got {decay}); e.g. 0.999")
    for key in ("eval_every_steps", "eval_every_epochs"):
        _check(tr[key] is None or tr[key] >= 1, f"trainer.{key}", f"must be at least 1 or null (got {tr[key]})")
    _check(stop.patience is None or stop.patience >= 1, "trainer.early_stop.patience",
           f"must be at least 1 or null (got {stop.patience})")
    _check(stop.min_delta >= 0, "trainer.early_stop.min_delta", f"must be >= 0 (got {stop.min_delta})")
    _check(stop.patience is None or held_out, "trainer.early_stop.patience",
           "needs a held-out set to watch: set data.val_fraction > 0 (e.g. 0.1)")
    _check(cfg.resume_from != "best" or held_out, "resume_from",
           "best needs a held-out set (data.val_fraction > 0): the best checkpoint is the one with the lowest held-out loss")


def _drop_knobs_the_type_lacks(cfg: DictConfig, schema: DictConfig) -> None:
    """A preset sets `adapter.rank` whatever `adapter=` chose; a type without a rank (OFT) goes without it. A knob
    no type has is refused; one typed on the command line was refused before composing
    (`overrides.check_overrides`)."""
    knobs = {name for s in ADAPTER_SCHEMAS.values() for name in knobs_of(s)}
    for key in [k for k in cfg.adapter if k not in schema]:
        _check(key in knobs, f"adapter.{key}",
               f"adapter={schema._target_.rsplit('.', 1)[-1].lower()} has no {key}; its knobs are adapter."
               + ", adapter.".join(k for k in schema if not k.startswith("_")))
        with open_dict(cfg):
            cfg.adapter.pop(key)


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def validate(cfg: DictConfig) -> None:
    """Range and consistency checks that a type system cannot express. Touches no model or data file."""
    adapter, tr, opt, data = cfg.adapter, cfg.trainer, cfg.optimizer, cfg.data
    _check_finite(cfg)
    _check_arch(cfg.model.arch)
    _check(0 <= tr.seed <= MAX_SEED, "trainer.seed", f"must be between 0 and {MAX_SEED} (got {tr.seed})")
    _check(RUN_NAME.fullmatch(str(cfg.run.name)) is not None, "run.name",
           f"{cfg.run.name!r}: use letters, digits, - and _ only (it names files and a PEFT adapter)")
    _check(len(adapter.target_modules) > 0, "adapter.target_modules", "is empty; name at least one projection")
    _check(opt.lr > 0, "optimizer.lr", f"must be > 0 (got {opt.lr})")
    _check(opt.weight_decay >= 0, "optimizer.weight_decay", f"must be >= 0 (got {opt.weight_decay})")
    _check(tr.epochs >= 1, "trainer.epochs", f"must be at least 1 (got {tr.epochs})")
    _check(tr.max_steps is None or tr.max_steps >= 1, "trainer.max_steps", f"must be at least 1 or null (got {tr.max_steps})")
    _check(tr.batch_size >= 1, "trainer.batch_size", f"must be at least 1 (got {tr.batch_size})")
    _check(tr.gradient_accumulation >= 1, "trainer.gradient_accumulation", f"must be at least 1 (got {tr.gradient_accumulation})")
    _check(tr.max_grad_norm > 0, "trainer.max_grad_norm", f"must be > 0 (got {tr.max_grad_norm})")
    _check_device(tr, "trainer.")
    _check_quantized(cfg)
    for key in ("save_every", "log_every", "log_heavy_every", "keep_checkpoints"):
        _check(tr[key] >= 1, f"trainer.{key}", f"must be at least 1 (got {tr[key]})")
    _check(tr.save_every_steps is None or tr.save_every_steps >= 1, "trainer.save_every_steps",
           f"must be at least 1 or null (got {tr.save_every_steps})")
    _check_keep_best(cfg)
    _check(tr.compile in COMPILE_MODES, "trainer.compile", f"must be false, blocks or full (got {tr.compile!r})")
    _check(bool(tr.compile_backend.strip()), "trainer.compile_backend", "is empty; use inductor (or aot_eager)")
    _check_model(cfg.model)
    _check_optimizer(opt)
    t = cfg.timesteps
    _check(0.0 <= t.cfg_ratio < 1.0, "timesteps.cfg_ratio", f"must be in [0, 1) (got {t.cfg_ratio})")
    _check(t.mode != "vanilla" or len(t.discrete_timesteps) > 0, "timesteps.discrete_timesteps", "vanilla mode needs the discrete schedule")
    _check(all(0.0 < s <= 1.0 for s in t.discrete_timesteps), "timesteps.discrete_timesteps", "values must be in (0, 1]")
    _check(t.min_snr_gamma is None or t.min_snr_gamma > 0, "timesteps.min_snr_gamma", f"must be > 0 or null (got {t.min_snr_gamma})")
    _check(cfg.model.timestep_sigma > 0, "model.timestep_sigma", f"must be > 0 (got {cfg.model.timestep_sigma})")
    _check_schedule(cfg.scheduler)
    _check(data.crop_seconds is None or data.crop_seconds * LATENT_FPS >= 2 * cfg.model.arch.patch_size,
           "data.crop_seconds", f"must be null or at least {2 * cfg.model.arch.patch_size / LATENT_FPS} s (got {data.crop_seconds})")
    est = cfg.estimate
    _check(est.batches >= 1, "estimate.batches", f"must be at least 1 (got {est.batches})")
    _check(len(est.ranks) > 0 and all(r >= 1 for r in est.ranks), "estimate.ranks", "must be a list of ranks >= 1")
    _check(est.budget_params is None or est.budget_params > 0, "estimate.budget_params", "must be > 0 or null")
    rank_map = adapter.get("rank_map")
    _check(rank_map is None or Path(rank_map).is_file(), "adapter.rank_map",
           f"{rank_map} is not a file; pass the estimate.json written by python -m sidestep.estimate")
    _check(0.0 <= data.val_fraction < 1.0, "data.val_fraction", f"must be in [0, 1) (got {data.val_fraction})")
    _check(data.num_workers is None or data.num_workers >= 0, "data.num_workers", f"must be >= 0 (got {data.num_workers})")
    _check(data.prefetch_factor >= 1, "data.prefetch_factor", f"must be at least 1 (got {data.prefetch_factor})")
    _check(data.num_workers is None or data.num_workers <= MAX_WORKERS, "data.num_workers",
           f"must be at most {MAX_WORKERS} (got {data.num_workers}); null picks one for this machine")
    preprocessing = cfg.preprocess.audio_dir is not None
    _check(not preprocessing or "dataset_dir" in data, "preprocess.audio_dir",
           "makes samples for data=tensors, which this data source does not read; leave preprocess.audio_dir unset")
    data_schema(data).check(data, preprocessing)
    if preprocessing:
        validate_preprocess(cfg.preprocess, "preprocess.")
    validate_sample(cfg.sample)
    shapes = projection_shapes(cfg.model.arch)
    OmegaConf.to_object(adapter).check({m: shapes[m] for m in adapter.target_modules})


def _check_quantized(cfg: DictConfig) -> None:
    """A bitsandbytes base needs an adapter type PEFT can put on its layers, and bitsandbytes kernels (none on MPS)."""
    quantize = cfg.model.get("quantize")
    if quantize is None:
        return
    kind = OmegaConf.to_object(cfg.adapter)  # the type's schema: what it is, without building it (torch)
    _check(kind.on_quantized_base, "model.quantize",
           f"{quantize}: a {kind._target_.rsplit('.', 1)[-1]}{' (DoRA)' if getattr(kind, 'use_dora', False) else ''} adapter cannot "
           "train on a bitsandbytes base here; use model.quantize=null or adapter=lora")
    _check(not cfg.trainer.device.startswith("mps"), "model.quantize",
           f"{quantize}: bitsandbytes has no Apple MPS kernels; use model.quantize=null on a Mac")


def _check_finite(cfg: DictConfig) -> None:
    """No option anywhere takes NaN or infinity (an infinite crop, learning rate or alpha is a typo, not a wish)."""
    for key, value in flatten(as_container(cfg)).items():
        _check(not isinstance(value, float) or math.isfinite(value), key, f"must be a finite number (got {value})")


def _check_seed(value: int, key: str) -> None:
    _check(0 <= value <= MAX_SEED, key, f"must be between 0 and {MAX_SEED} (got {value})")


def _check_model(model: DictConfig) -> None:
    """The variant's generation defaults and the tiny model's seed."""
    _check_seed(model.init_seed, "model.init_seed")
    s = model.sampling
    _check(s.steps >= 1, "model.sampling.steps", f"must be at least 1 (got {s.steps})")
    _check(s.guidance >= 0, "model.sampling.guidance", f"must be >= 0 (got {s.guidance})")
    _check(s.shift > 0, "model.sampling.shift", f"must be > 0 (got {s.shift})")


def _check_optimizer(opt: DictConfig) -> None:
    """The options some optimizers add (`betas`, `eps`, Prodigy's `d_coef`), where the optimizer has them."""
    if "betas" in opt:
        _check(len(opt.betas) == 2 and all(0 <= b < 1 for b in opt.betas), "optimizer.betas",
               f"must be two numbers in [0, 1) (got {list(opt.betas)})")
    for key in ("eps", "d_coef"):
        if key in opt:
            _check(opt[key] > 0, f"optimizer.{key}", f"must be > 0 (got {opt[key]})")


def check_prompts(prompts, key: str) -> None:
    """Prompts given to render (`sample.prompts`, a `prompts=` file): a caption, and a tempo if any above 0."""
    for i, p in enumerate(prompts):
        _check(bool(str(p.prompt).strip()), f"{key}[{i}].prompt", "is empty; describe the music")
        _check(p.bpm is None or 0 < p.bpm <= 1000, f"{key}[{i}].bpm", f"must be between 1 and 1000 or null (got {p.bpm})")


def _check_arch(arch: DictConfig) -> None:
    for key, value in arch.items():
        _check(value > 0, f"model.arch.{key}", f"must be > 0 (got {value}); model.arch describes the DiT's shape")


def _check_schedule(scheduler: DictConfig) -> None:
    """The schedule's own knobs (its schema's `check`); then it is built from its `_target_`: it must give a number
    for a step, as `LambdaLR` will ask."""
    OmegaConf.get_type(scheduler).check(scheduler)
    try:
        float(build(scheduler)(total_steps=10)(0))
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"scheduler._target_: {scheduler._target_} is not a learning-rate schedule "
                          f"({type(err).__name__}); use scheduler=" + "|".join(CHOSEN_BY_TARGET["scheduler"])) from None


def validate_preprocess(p: DictConfig, prefix: str = "") -> None:
    """The preprocessing settings, for `sidestep.preprocess` (no prefix) and `preprocess.*` in training."""
    _check(p.audio_dir is not None, f"{prefix}audio_dir", "is not set; point it at a folder of songs")
    _check(Path(p.audio_dir).is_dir(), f"{prefix}audio_dir", f"{p.audio_dir} is not a folder of songs")
    _check(p.dataset_json is None or Path(p.dataset_json).is_file(), f"{prefix}dataset_json",
           f"{p.dataset_json} is not a file; point it at ACE-Step's dataset.json, or leave it out to use sidecars")
    _check(p.max_duration > 0, f"{prefix}max_duration", f"must be > 0 seconds (got {p.max_duration})")
    _check(p.tile_overlap_seconds >= 0, f"{prefix}tile_overlap_seconds", f"must be >= 0 (got {p.tile_overlap_seconds})")
    _check(p.tile_seconds - 2 * p.tile_overlap_seconds >= 1, f"{prefix}tile_seconds",
           f"must be at least 1 s longer than twice the overlap (got {p.tile_seconds} with overlap {p.tile_overlap_seconds})")
    _check(p.max_text_tokens >= 16, f"{prefix}max_text_tokens", f"must be at least 16 (got {p.max_text_tokens})")
    _check(p.trigger_tag is None or bool(p.trigger_tag.strip()), f"{prefix}trigger_tag",
           "is empty; give a word to call the style up, or leave it null")
    _check(p.max_lyric_tokens >= 16, f"{prefix}max_lyric_tokens", f"must be at least 16 (got {p.max_lyric_tokens})")
    _check(-70 <= p.target_lufs < 0, f"{prefix}target_lufs", f"must be between -70 and 0 LUFS (got {p.target_lufs}); "
           "streaming services play at about -14")
    _check(-60 <= p.target_peak_db <= 0, f"{prefix}target_peak_db",
           f"must be between -60 and 0 dBFS (got {p.target_peak_db}); above 0 the song would clip")
    _check_device(p, prefix)


def validate_sample(s: DictConfig) -> None:
    for key in ("every_n_epochs", "every_n_steps"):
        _check(s[key] is None or s[key] >= 1, f"sample.{key}", f"must be at least 1 or null (got {s[key]})")
    check_prompts(s.prompts, "sample.prompts")
    _check_rendering(s, "sample.")


def _check_device(node: DictConfig, prefix: str) -> None:
    """`device` and `precision`, as training, preprocessing and sampling take them."""
    _check(bool(DEVICE_PATTERN.fullmatch(node.device)), f"{prefix}device",
           f"must be auto, cpu, cuda, cuda:N, mps or xpu (got {node.device!r})")


def _check_rendering(node: DictConfig, prefix: str) -> None:
    """What both samplers share: how long, how many, and the generation settings (null: the variant's default)."""
    _check(node.duration is None or 0 < node.duration <= 600, f"{prefix}duration",
           f"must be between 0 and 600 seconds (got {node.duration})")
    _check(node.count >= 1, f"{prefix}count", f"must be at least 1 (got {node.count})")
    _check(node.steps is None or node.steps >= 1, f"{prefix}steps", f"must be at least 1 or null (got {node.steps})")
    _check(node.guidance is None or node.guidance >= 0, f"{prefix}guidance", f"must be >= 0 or null (got {node.guidance})")
    _check(node.shift is None or node.shift > 0, f"{prefix}shift", f"must be > 0 or null (got {node.shift})")
    _check_seed(node.seed, f"{prefix}seed")


def _absolute(path: Optional[str]) -> Optional[str]:
    """Relative paths are relative to where the command was launched (Hydra does not chdir)."""
    return None if path is None else str(Path(path).expanduser().resolve())


def checked_train_config(cfg: DictConfig) -> DictConfig:
    """Typed, validated and resolved: absolute paths, alpha from the rank, and the schedule Prodigy needs. What the
    run really uses."""
    cfg = typed(cfg)
    cfg.trainer.compile = str(cfg.trainer.compile).lower()  # the command line's `false` arrives as a boolean
    cfg.model.checkpoint_dir = _absolute(cfg.model.checkpoint_dir)
    for key in data_schema(cfg.data).paths(cfg.data):
        OmegaConf.update(cfg.data, key, _absolute(OmegaConf.select(cfg.data, key)))
    if "rank_map" in cfg.adapter:
        cfg.adapter.rank_map = _absolute(cfg.adapter.rank_map)
    if "rank" in cfg.adapter and (cfg.adapter.alpha_ratio is not None or cfg.adapter.alpha is None):
        cfg.adapter.alpha = (cfg.adapter.alpha_ratio or ALPHA_PER_RANK) * cfg.adapter.rank  # follows the rank
    if cfg.resume_from not in (None, "latest", "best"):
        cfg.resume_from = _absolute(cfg.resume_from)
    for key in ("audio_dir", "out_dir", "dataset_json"):
        cfg.preprocess[key] = _absolute(cfg.preprocess[key])
    _optimizer_rules(cfg)
    validate(cfg)
    return cfg


def checked_preprocess_config(cfg: DictConfig) -> DictConfig:
    """What `python -m sidestep.preprocess` uses: typed, absolute paths, checked."""
    cfg = _merge(OmegaConf.structured(PreprocessConfig), cfg)
    for key in ("audio_dir", "out_dir", "dataset_json"):
        cfg[key] = _absolute(cfg[key])
    cfg.model.checkpoint_dir = _absolute(cfg.model.checkpoint_dir)
    _check(cfg.out_dir is not None, "out_dir", "is not set; name the folder the tensors go to")
    validate_preprocess(cfg)
    return cfg


def checked_sample_config(cfg: DictConfig) -> DictConfig:
    """What `python -m sidestep.sample` uses: typed, absolute paths, checked."""
    check_built_targets(cfg)
    cfg = _merge(OmegaConf.structured(SampleConfig), cfg)
    for key in ("source", "prompts"):
        cfg[key] = _absolute(cfg[key])
    cfg.model.checkpoint_dir = _absolute(cfg.model.checkpoint_dir)
    _check(cfg.source is not None, "source", "is not set; give a run dir, its adapter/ or a checkpoints/step-N/")
    _check(cfg.prompts is None or Path(cfg.prompts).is_file(), "prompts", f"{cfg.prompts} is not a file")
    _check(cfg.strength >= 0, "strength", f"must be >= 0 (got {cfg.strength})")
    _check(all(s >= 0 for s in cfg.compare_strengths), "compare_strengths", "must all be >= 0")
    _check_rendering(cfg, "")
    _check_device(cfg, "")
    return cfg


def checked_analyze_config(cfg: DictConfig) -> DictConfig:
    """What `python -m sidestep.analyze` uses: typed, the songs folder absolute, checked."""
    cfg = _merge(OmegaConf.structured(AnalyzeConfig), cfg)
    cfg.songs_dir = _absolute(cfg.songs_dir)
    _check(cfg.songs_dir is not None, "songs_dir", "is not set; give the folder of songs: python -m sidestep.analyze "
           "./songs")
    _check(Path(cfg.songs_dir).is_dir(), "songs_dir", f"{cfg.songs_dir} is not a folder of songs")
    for key in ("min_bpm_confidence", "min_key_confidence", "min_signature_confidence"):
        _check(0 <= cfg[key] <= 1, key, f"must be between 0 and 1 (got {cfg[key]})")
    _check(cfg.workers is None or cfg.workers >= 1, "workers", f"must be at least 1 or null (got {cfg.workers})")
    return cfg


def _merge(schema: DictConfig, cfg: DictConfig) -> DictConfig:
    """`cfg` on its schema; a wrong key or type is one line naming it."""
    try:
        return OmegaConf.merge(schema, cfg)
    except Exception as err:  # omegaconf's ValidationError family: wrong key or type
        raise ConfigError(str(err).splitlines()[0] + f" (at {getattr(err, 'full_key', '?')})") from None


def _optimizer_rules(cfg: DictConfig) -> None:
    """What the optimizer's schema says about it: the lr range that makes sense (Prodigy's lr multiplies its own
    estimate), and a schedule it needs (Prodigy sets its own step size: constant)."""
    schema, schedules = OmegaConf.get_type(cfg.optimizer), CHOSEN_BY_TARGET["scheduler"]
    name = option_name("optimizer", cfg.optimizer)
    if schema.usual_lr is not None and not schema.usual_lr[0] <= cfg.optimizer.lr <= schema.usual_lr[1]:
        log.warning("optimizer=%s with optimizer.lr=%g: its lr is usually between %g and %g; use about %g", name,
                    cfg.optimizer.lr, *schema.usual_lr, schema.lr)
    required = schema.required_schedule
    if required is not None and OmegaConf.get_type(cfg.scheduler) is not schedules[required]:
        log.warning("optimizer=%s sets its own step size: using scheduler=%s instead of %s", name, required,
                    option_name("scheduler", cfg.scheduler))
        cfg.scheduler = OmegaConf.structured(schedules[required])
