"""The typed schema of every knob in `conf/`, and the checks run on it before anything heavy is built.

Each config group's YAML extends one of these dataclasses (registered in Hydra's ConfigStore as
`schema/<group>/<name>`), so a typo or a wrong type fails at compose time. `validate` then checks
ranges and cross-field rules and raises `ConfigError` with the key that is wrong.
"""

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from sidestep.errors import ConfigError

LATENT_FPS = 25  # 48 kHz audio, VAE downsampling 1920
log = logging.getLogger("sidestep")


@dataclass
class ArchConfig:
    """Keyword arguments of diffusers' `AceStepTransformer1DModel`; defaults are the 2B turbo/base/sft DiT."""

    hidden_size: int = 2048
    intermediate_size: int = 6144
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    in_channels: int = 192
    audio_acoustic_hidden_dim: int = 64
    patch_size: int = 2
    rope_theta: float = 1_000_000.0
    sliding_window: int = 128
    encoder_hidden_size: int = 2048


@dataclass
class ModelConfig:
    variant: str = MISSING  # tiny | turbo | base | sft
    checkpoint_dir: Optional[str] = None  # ACE-Step `checkpoints/` root; unused by `tiny`
    is_turbo: bool = False
    timestep_mu: float = -0.4
    timestep_sigma: float = 1.0
    data_proportion: float = 0.5
    init_seed: int = 0  # `tiny` only: seed of its random weights, so every run starts from the same base
    arch: ArchConfig = field(default_factory=ArchConfig)


@dataclass
class OptimizerConfig:
    """Built with `hydra.utils.instantiate(cfg.optimizer)(params)`; subclasses add the optimizer's own kwargs."""

    _target_: str = MISSING
    _partial_: bool = True
    lr: float = 1e-4
    weight_decay: float = 0.01


@dataclass
class AdamWConfig(OptimizerConfig):
    _target_: str = "torch.optim.AdamW"
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class AdamW8bitConfig(AdamWConfig):
    _target_: str = "bitsandbytes.optim.AdamW8bit"


@dataclass
class AdafactorConfig(OptimizerConfig):
    _target_: str = "transformers.optimization.Adafactor"
    scale_parameter: bool = False
    relative_step: bool = False
    warmup_init: bool = False


@dataclass
class ProdigyConfig(OptimizerConfig):
    _target_: str = "prodigyopt.Prodigy"
    lr: float = 1.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    d_coef: float = 1.0
    use_bias_correction: bool = True
    safeguard_warmup: bool = True


PRODIGY_TARGET = ProdigyConfig._target_
OPTIMIZER_SCHEMAS = {
    "adamw": AdamWConfig,
    "adamw8bit": AdamW8bitConfig,
    "adafactor": AdafactorConfig,
    "prodigy": ProdigyConfig,
}


@dataclass
class SchedulerConfig:
    """`instantiate(cfg.scheduler)(total_steps=N)` gives the LR multiplier for `LambdaLR`."""

    _target_: str = MISSING
    _partial_: bool = True
    warmup_steps: int = 100  # optimizer steps; the LR ramps from 10% to 100%


CONSTANT_SCHEDULER = "sidestep.training.lr_schedules.constant"


@dataclass
class AttentionConfig:
    blocks: List[str] = field(default_factory=lambda: ["self_attn", "cross_attn"])


@dataclass
class TrainingConfig:
    """How timesteps are drawn and how often the text condition is dropped (DESIGN §4)."""

    mode: str = "fixed"  # fixed | vanilla
    cfg_ratio: float = 0.15
    discrete_timesteps: List[float] = field(default_factory=list)  # vanilla only
    min_snr_gamma: Optional[float] = None


@dataclass
class LoraConfig:
    rank: int = 64
    alpha: float = 128.0
    alpha_ratio: Optional[float] = None  # when set, alpha = alpha_ratio x rank (keeps the scale fixed in rank sweeps)
    dropout: float = 0.1
    bias: str = "none"  # none | all | lora_only
    target_modules: List[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    rank_map: Optional[str] = None  # an estimate.json from `python -m sidestep.estimate`: per-module ranks


@dataclass
class TrainerConfig:
    epochs: int = 100
    max_steps: Optional[int] = None  # optimizer steps; caps `epochs` when set
    batch_size: int = 1
    gradient_accumulation: int = 4
    max_grad_norm: float = 1.0
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps | xpu
    precision: str = "auto"  # auto | bf16 | fp16 | fp32
    gradient_checkpointing: bool = False
    save_every: int = 10  # epochs
    save_every_steps: Optional[int] = None  # optimizer steps; also checkpoint mid-epoch when set
    keep_checkpoints: int = 3
    on_nonfinite: str = "error"  # error | skip: what a NaN/Inf loss or gradient does
    log_every: int = 10  # optimizer steps
    log_heavy_every: int = 50  # optimizer steps


@dataclass
class SyntheticConfig:
    """A small generated dataset the tiny model can learn; written once to a cache folder."""

    num_samples: int = 8
    seconds: float = 4.0
    styles: int = 4
    text_tokens: int = 16
    seed: int = 0
    cache_dir: Optional[str] = None  # default: the user cache folder


@dataclass
class DataConfig:
    dataset_dir: Optional[str] = None
    synthetic: Optional[SyntheticConfig] = None
    crop_seconds: Optional[float] = None
    num_workers: int = 4
    pin_memory: bool = True
    prefetch_factor: int = 2
    persistent_workers: bool = True
    on_bad_sample: str = "error"  # error | skip: what an unusable sample file does
    val_fraction: float = 0.0  # held out, scored at fixed timesteps and noise so runs compare


@dataclass
class ResumeConfig:
    strict: bool = True  # false: a checkpoint that does not fit loads its matching LoRA tensors only


@dataclass
class UIConfig:
    plain: bool = False  # plain log lines instead of a live progress bar; automatic when stdout is piped
    yes: bool = False  # skip the confirmation after the setup summary


@dataclass
class EstimateConfig:
    """`python -m sidestep.estimate`: gradient sensitivity of each candidate module, turned into a rank plan."""

    batches: int = 32
    include_mlp: bool = False  # also score the MLP projections
    budget_params: Optional[int] = None  # default: what lora.rank on every candidate module would train
    ranks: List[int] = field(default_factory=lambda: [4, 8, 16, 32, 64, 128])


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    scheduler: SchedulerConfig = MISSING
    attention: AttentionConfig = MISSING
    training: TrainingConfig = MISSING
    data: DataConfig = MISSING
    lora: LoraConfig = field(default_factory=LoraConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    ui: UIConfig = field(default_factory=UIConfig)
    resume_from: Optional[str] = None  # a checkpoint dir, or `latest` (newest complete one of hydra.run.dir)
    resume: ResumeConfig = field(default_factory=ResumeConfig)
    estimate: EstimateConfig = field(default_factory=EstimateConfig)


def register_schemas() -> None:
    """Make the schemas available to the YAML files: each extends `/schema/<group>/<name>@_here_`."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for group, schema in [("model", ModelConfig), ("scheduler", SchedulerConfig), ("attention", AttentionConfig),
                          ("training", TrainingConfig), ("data", DataConfig)]:
        cs.store(group=f"schema/{group}", name="base", node=schema)
    for name, schema in OPTIMIZER_SCHEMAS.items():
        cs.store(group="schema/optimizer", name=name, node=schema)


ATTENTION_BLOCKS = ("self_attn", "cross_attn")
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|xpu|cuda(:\d+)?")


def typed(cfg: DictConfig) -> DictConfig:
    """Re-attach the schema to a config that lost it (a rerun from a saved `config.yaml` is a plain dict)."""
    schema = OmegaConf.structured(TrainConfig)
    target = OmegaConf.select(cfg, "optimizer._target_")
    by_target = {s._target_: s for s in OPTIMIZER_SCHEMAS.values()}
    if target not in by_target:
        raise ConfigError(f"optimizer._target_={target!r} is not a known optimizer; pick optimizer=" + "|".join(OPTIMIZER_SCHEMAS))
    schema.optimizer = OmegaConf.structured(by_target[target])
    try:
        return OmegaConf.merge(schema, cfg)
    except Exception as err:  # omegaconf's ValidationError family: wrong key or type
        raise ConfigError(str(err).splitlines()[0] + f" (at {getattr(err, 'full_key', '?')})") from None


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def validate(cfg: DictConfig) -> None:
    """Range and consistency checks that a type system cannot express. Touches no model or data file."""
    lora, tr, opt, data = cfg.lora, cfg.trainer, cfg.optimizer, cfg.data
    _check(lora.rank >= 1, "lora.rank", f"must be at least 1 (got {lora.rank})")
    _check(lora.alpha > 0, "lora.alpha", f"must be > 0 (got {lora.alpha}); usually 2 x rank")
    _check(lora.alpha_ratio is None or lora.alpha_ratio > 0, "lora.alpha_ratio", f"must be > 0 or null (got {lora.alpha_ratio})")
    _check(0.0 <= lora.dropout <= 0.5, "lora.dropout", f"must be between 0 and 0.5 (got {lora.dropout})")
    _check(lora.bias in ("none", "all", "lora_only"), "lora.bias", f"must be none, all or lora_only (got {lora.bias!r})")
    known = ATTENTION_PROJECTIONS + MLP_PROJECTIONS
    bad = [m for m in lora.target_modules if m not in known]
    _check(not bad and len(lora.target_modules) > 0, "lora.target_modules", f"unknown {bad}; choose from {list(known)}")
    bad = [b for b in cfg.attention.blocks if b not in ATTENTION_BLOCKS]
    _check(not bad, "attention.blocks", f"unknown {bad}; use attention=both|self|cross")
    _check(opt.lr > 0, "optimizer.lr", f"must be > 0 (got {opt.lr})")
    _check(opt.weight_decay >= 0, "optimizer.weight_decay", f"must be >= 0 (got {opt.weight_decay})")
    _check(cfg.scheduler.warmup_steps >= 0, "scheduler.warmup_steps", f"must be >= 0 (got {cfg.scheduler.warmup_steps})")
    _check(tr.epochs >= 1, "trainer.epochs", f"must be at least 1 (got {tr.epochs})")
    _check(tr.max_steps is None or tr.max_steps >= 1, "trainer.max_steps", f"must be at least 1 or null (got {tr.max_steps})")
    _check(tr.batch_size >= 1, "trainer.batch_size", f"must be at least 1 (got {tr.batch_size})")
    _check(tr.gradient_accumulation >= 1, "trainer.gradient_accumulation", f"must be at least 1 (got {tr.gradient_accumulation})")
    _check(tr.max_grad_norm > 0, "trainer.max_grad_norm", f"must be > 0 (got {tr.max_grad_norm})")
    _check(bool(DEVICE_PATTERN.fullmatch(tr.device)), "trainer.device", f"must be auto, cpu, cuda, cuda:N, mps or xpu (got {tr.device!r})")
    _check(tr.precision in ("auto", "bf16", "fp16", "fp32"), "trainer.precision", f"must be auto, bf16, fp16 or fp32 (got {tr.precision!r})")
    for key in ("save_every", "log_every", "log_heavy_every", "keep_checkpoints"):
        _check(tr[key] >= 1, f"trainer.{key}", f"must be at least 1 (got {tr[key]})")
    _check(tr.save_every_steps is None or tr.save_every_steps >= 1, "trainer.save_every_steps",
           f"must be at least 1 or null (got {tr.save_every_steps})")
    _check(tr.on_nonfinite in ("error", "skip"), "trainer.on_nonfinite", f"must be error or skip (got {tr.on_nonfinite!r})")
    _check(data.on_bad_sample in ("error", "skip"), "data.on_bad_sample", f"must be error or skip (got {data.on_bad_sample!r})")
    t = cfg.training
    _check(t.mode in ("fixed", "vanilla"), "training.mode", f"must be fixed or vanilla (got {t.mode!r}); use training=fixed|vanilla")
    _check(0.0 <= t.cfg_ratio < 1.0, "training.cfg_ratio", f"must be in [0, 1) (got {t.cfg_ratio})")
    _check(t.mode != "vanilla" or len(t.discrete_timesteps) > 0, "training.discrete_timesteps", "vanilla mode needs the discrete schedule")
    _check(all(0.0 < s <= 1.0 for s in t.discrete_timesteps), "training.discrete_timesteps", "values must be in (0, 1]")
    _check(t.min_snr_gamma is None or t.min_snr_gamma > 0, "training.min_snr_gamma", f"must be > 0 or null (got {t.min_snr_gamma})")
    _check(cfg.model.timestep_sigma > 0, "model.timestep_sigma", f"must be > 0 (got {cfg.model.timestep_sigma})")
    _check(data.crop_seconds is None or data.crop_seconds * LATENT_FPS >= 2 * cfg.model.arch.patch_size,
           "data.crop_seconds", f"must be null or at least {2 * cfg.model.arch.patch_size / LATENT_FPS} s (got {data.crop_seconds})")
    est = cfg.estimate
    _check(est.batches >= 1, "estimate.batches", f"must be at least 1 (got {est.batches})")
    _check(len(est.ranks) > 0 and all(r >= 1 for r in est.ranks), "estimate.ranks", "must be a list of ranks >= 1")
    _check(est.budget_params is None or est.budget_params > 0, "estimate.budget_params", "must be > 0 or null")
    _check(lora.rank_map is None or Path(lora.rank_map).is_file(), "lora.rank_map",
           f"{lora.rank_map} is not a file; pass the estimate.json written by python -m sidestep.estimate")
    _check(0.0 <= data.val_fraction < 1.0, "data.val_fraction", f"must be in [0, 1) (got {data.val_fraction})")
    _check(data.num_workers >= 0, "data.num_workers", f"must be >= 0 (got {data.num_workers})")
    _check(data.prefetch_factor >= 1, "data.prefetch_factor", f"must be at least 1 (got {data.prefetch_factor})")
    if data.synthetic is None:
        _check(data.dataset_dir is not None, "data.dataset_dir",
               "is not set; point it at a folder of preprocessed samples, or try experiment=demo")
        _check(Path(data.dataset_dir).is_dir(), "data.dataset_dir",
               f"{data.dataset_dir} is not a folder; point it at your preprocessed tensors, or try experiment=demo")
    if cfg.model.variant != "tiny":
        ckpt = cfg.model.checkpoint_dir
        _check(ckpt is not None, "model.checkpoint_dir",
               f"is not set; point it at your ACE-Step checkpoints/ folder for model={cfg.model.variant}, or try experiment=demo")
        _check(Path(ckpt).is_dir(), "model.checkpoint_dir",
               f"{ckpt} does not exist; point it at your ACE-Step checkpoints/ folder, or try experiment=demo")


def as_container(cfg: DictConfig) -> Any:
    """A plain, fully resolved copy for saving and printing."""
    return OmegaConf.to_container(cfg, resolve=True)


def flatten(node: Any, sep: str = ".", prefix: str = "") -> dict:
    """`{"lora": {"rank": 4}}` -> `{"lora.rank": 4}` (leaves include lists and None), for comparing and logging."""
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for key, value in node.items():
        out.update(flatten(value, sep, f"{prefix}{sep}{key}" if prefix else str(key)))
    return out


def _absolute(path: Optional[str]) -> Optional[str]:
    """Relative paths are relative to where the command was launched (Hydra does not chdir)."""
    return None if path is None else str(Path(path).expanduser().resolve())


def prepare(cfg: DictConfig) -> DictConfig:
    """Typed, validated and resolved: absolute paths, and the schedule Prodigy needs. What the run really uses."""
    cfg = typed(cfg)
    cfg.model.checkpoint_dir = _absolute(cfg.model.checkpoint_dir)
    cfg.data.dataset_dir = _absolute(cfg.data.dataset_dir)
    cfg.lora.rank_map = _absolute(cfg.lora.rank_map)
    if cfg.lora.alpha_ratio is not None:
        cfg.lora.alpha = cfg.lora.alpha_ratio * cfg.lora.rank
    if cfg.resume_from not in (None, "latest"):
        cfg.resume_from = _absolute(cfg.resume_from)
    if cfg.data.synthetic is not None:
        cfg.data.synthetic.cache_dir = _absolute(cfg.data.synthetic.cache_dir)
    if cfg.optimizer._target_ == PRODIGY_TARGET:
        _prodigy_rules(cfg)
    validate(cfg)
    return cfg


def _prodigy_rules(cfg: DictConfig) -> None:
    """Prodigy estimates the step size itself: its lr is a multiplier near 1, and the schedule must be constant."""
    if not 0.1 <= cfg.optimizer.lr <= 10:
        log.warning("optimizer=prodigy with optimizer.lr=%g: Prodigy's lr scales its own estimate, use about 1.0",
                    cfg.optimizer.lr)
    if cfg.scheduler._target_ != CONSTANT_SCHEDULER:
        log.warning("optimizer=prodigy adapts its own step size: using scheduler=constant instead of %s",
                    cfg.scheduler._target_.rsplit(".", 1)[-1])
        cfg.scheduler = OmegaConf.merge(OmegaConf.structured(SchedulerConfig),
                                        {"_target_": CONSTANT_SCHEDULER, "warmup_steps": 0})
