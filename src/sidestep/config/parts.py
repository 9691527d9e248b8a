"""The schemas of the config groups that build a part (`_target_`): the model source and its shape, the optimizer,
the adapter type, the learning-rate schedule, the data source; and of the two groups that choose how (attention
blocks, timestep drawing). One dataclass per option where options differ in their fields (`OPTIMIZER_SCHEMAS`,
`ADAPTER_SCHEMAS`, `SCHEDULER_SCHEMAS`; the data sources' `DATA_SCHEMAS` in `data_sources.py`), with the facts about it the rest of Side-Step asks (class-level, not config
keys); a YAML in `conf/<group>/` holds only what differs from its dataclass.
"""

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Tuple

from omegaconf import MISSING

from sidestep.config.choices import (
    ATTENTION_PROJECTIONS,
    AttentionBlock,
    Bias,
    Quantize,
    TargetModule,
    TimestepMode,
)
from sidestep.errors import ConfigError

Shapes = Dict[str, Tuple[int, int]]  # (in, out) features of each target, under its original name


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
class TinyStackConfig:
    """`tiny` only: keyword arguments of the random VAE, Qwen3 text encoder and condition encoder."""

    vae: Dict[str, Any] = field(default_factory=dict)
    text_encoder: Dict[str, Any] = field(default_factory=dict)
    condition_encoder: Dict[str, Any] = field(default_factory=dict)


@dataclass
class SamplingDefaults:
    """How this variant generates by default (`sidestep.sample`, samples during training); overridable there."""

    steps: int = 8
    guidance: float = 1.0  # > 1 runs classifier-free guidance (base/sft); turbo has guidance distilled in
    shift: float = 3.0


@dataclass
class ModelConfig:
    """`instantiate(cfg.model)` gives the `models.ModelSource` that `_target_` names: the weights of an ACE-Step
    checkpoint folder, or the seeded random `tiny` stack. Everything that loads weights asks it."""

    _target_: str = "sidestep.models.acestep.AceStepCheckpoint"
    variant: str = MISSING  # acestep-v15-<variant>/: turbo | base | sft | xl-turbo | xl-base | xl-sft | auto | tiny
    checkpoint_dir: Optional[str] = None  # ACE-Step `checkpoints/` root, one variant folder, or a diffusers folder
    is_turbo: bool = False
    timestep_mu: float = -0.4
    timestep_sigma: float = 1.0
    init_seed: int = 0  # `tiny` only: seed of its random weights, so every run starts from the same base
    quantize: Optional[Quantize] = None  # int8 | nf4: the frozen DiT's block linears in bitsandbytes (QLoRA)
    arch: ArchConfig = field(default_factory=ArchConfig)
    tiny_stack: Optional[TinyStackConfig] = None
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)


@dataclass
class OptimizerConfig:
    """Built with `hydra.utils.instantiate(cfg.optimizer)(params)`; subclasses add the optimizer's own kwargs. The
    class-level facts (not config keys) are what the memory model and the checks need to know about it."""

    state_bytes_per_param: ClassVar[float] = 8.0  # its state per trainable fp32 parameter (AdamW: two moments)
    required_schedule: ClassVar[Optional[str]] = None  # a `scheduler=` option it needs (one that sets its own step)
    usual_lr: ClassVar[Optional[Tuple[float, float]]] = None  # outside this range the lr is most likely a mistake

    _target_: str = MISSING
    _partial_: bool = True
    lr: float = 1e-4  # peak learning rate (Prodigy: a multiplier of its own estimate)
    weight_decay: float = 0.01


@dataclass
class AdamConfig(OptimizerConfig):
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class AdamWConfig(AdamConfig):
    _target_: str = "torch.optim.AdamW"
    fused: Optional[bool] = None  # null: fused kernels on CUDA (one launch for all parameters), the default elsewhere


@dataclass
class AdamW8bitConfig(AdamConfig):
    state_bytes_per_param: ClassVar[float] = 2.0 + 8 / 256  # two uint8 moments, a float32 absmax per 256

    _target_: str = "bitsandbytes.optim.AdamW8bit"


@dataclass
class AdafactorConfig(OptimizerConfig):
    state_bytes_per_param: ClassVar[float] = 0.25  # factored second moments: about rows + columns of each matrix

    _target_: str = "transformers.optimization.Adafactor"
    scale_parameter: bool = False
    relative_step: bool = False
    warmup_init: bool = False


@dataclass
class ProdigyConfig(OptimizerConfig):
    """Prodigy estimates the step size itself: its lr multiplies that estimate, and the schedule stays constant."""

    state_bytes_per_param: ClassVar[float] = 16.0  # four moments
    required_schedule: ClassVar[Optional[str]] = "constant"
    usual_lr: ClassVar[Optional[Tuple[float, float]]] = (0.1, 10.0)

    _target_: str = "prodigyopt.Prodigy"
    lr: float = 1.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    d_coef: float = 1.0
    use_bias_correction: bool = True
    safeguard_warmup: bool = True


OPTIMIZER_SCHEMAS = {
    "adamw": AdamWConfig,
    "adamw8bit": AdamW8bitConfig,
    "adafactor": AdafactorConfig,
    "prodigy": ProdigyConfig,
}


@dataclass
class AdapterConfig:
    """The adapter type: `instantiate(cfg.adapter)` gives an `adapters.AdapterType` (the type's class in
    `adapters/<type>.py`, a subclass of its schema here), which turns these knobs (size, alpha, dropout, targets)
    into PEFT's config for that type and writes the files each consumer loads. Each type's schema holds only the
    knobs that apply to it (`adapter=oft adapter.rank=16` is refused), and the facts about the type that the checks,
    the report and the monitor read without importing torch."""

    _target_: str = MISSING
    target_modules: List[TargetModule] = field(default_factory=lambda: list(ATTENTION_PROJECTIONS))

    label: ClassVar[str] = "adapter"  # the type's name in words, for the report and the monitor
    takes_rank_map: ClassVar[bool] = False  # whether `adapter.rank_map`'s per-module ranks apply
    on_quantized_base: ClassVar[bool] = False  # whether PEFT can put it on bitsandbytes layers (model.quantize)
    scalable: ClassVar[bool] = True  # whether PEFT can play it at another strength (`sidestep.sample strength=`)
    injectable: ClassVar[bool] = True  # whether diffusers' `add_adapter` can inject it layer by layer (VeRA cannot:
    # its matrices are shared across layers)
    dropouts: ClassVar[Tuple[str, ...]] = ()  # its knobs that are fractions in [0, 1)

    @classmethod
    def words(cls, knobs: Mapping[str, Any]) -> str:
        """How a run's saved `adapter.*` is named in words: `LoRA rank 16 / alpha 32`, `OFT block size 32`."""
        return cls.label

    def check(self, shapes: Shapes) -> None:
        """Refuse, with one line naming the option, settings this type cannot train; `shapes` holds each target's
        (in, out) features. Runs on the schema, before any model (or torch) loads."""
        if not self.injectable:
            usable = "|".join(name for name, s in ADAPTER_SCHEMAS.items() if s.injectable)
            raise ConfigError(f"adapter._target_: {self._target_}: diffusers' add_adapter cannot put a {self.label} "
                              f"adapter on the DiT (its state is shared across layers); use adapter={usable}")
        for key in self.dropouts:
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"adapter.{key}: must be in [0, 1) (got {getattr(self, key)})")


def ranked_words(label: str, knobs: Mapping[str, Any]) -> str:
    alpha = knobs.get("alpha")
    return f"{label} rank {knobs.get('rank')} / alpha {alpha:g}" if isinstance(alpha, (int, float)) else \
        f"{label} rank {knobs.get('rank')}"


@dataclass
class RankedAdapterConfig(AdapterConfig):
    """A type sized by a rank and scaled by alpha / rank (LoRA, DoRA, LoKr, LoHa)."""

    rank: int = 64  # adapter size: 16 small, 64 typical, 128 large
    alpha: Optional[float] = None  # strength scale; null: 2 x rank, following the rank (adapter.alpha_ratio sets the factor)
    alpha_ratio: Optional[float] = None  # when set, alpha = alpha_ratio x rank (a sweeper's search knob)

    @classmethod
    def words(cls, knobs: Mapping[str, Any]) -> str:
        return ranked_words(cls.label, knobs)

    def check(self, shapes: Shapes) -> None:
        if self.rank < 1:
            raise ConfigError(f"adapter.rank: must be at least 1 (got {self.rank})")
        if self.alpha is not None and not self.alpha > 0:
            raise ConfigError(f"adapter.alpha: must be > 0 (got {self.alpha}); usually 2 x rank")
        if self.alpha_ratio is not None and not self.alpha_ratio > 0:
            raise ConfigError(f"adapter.alpha_ratio: must be > 0 or null (got {self.alpha_ratio})")
        super().check(shapes)


@dataclass
class LoraAdapterConfig(RankedAdapterConfig):
    _target_: str = "sidestep.adapters.lora.Lora"
    dropout: float = 0.1
    bias: Bias = Bias.none
    rank_map: Optional[str] = None  # an estimate.json from `python -m sidestep.estimate`: per-module ranks
    use_rslora: bool = False  # scale by alpha / sqrt(rank) instead of alpha / rank (rank-stabilised LoRA)
    use_dora: bool = False  # DoRA: also train each output row's magnitude (`adapter=dora` sets it)

    label: ClassVar[str] = "LoRA"
    takes_rank_map: ClassVar[bool] = True

    @property
    def on_quantized_base(self) -> bool:  # type: ignore[override]
        """LoRA trains on bitsandbytes layers (QLoRA). DoRA is refused there: its ComfyUI `dora_scale` is computed
        from the base weights, which a quantized base only approximates."""
        return not self.use_dora

    @classmethod
    def words(cls, knobs: Mapping[str, Any]) -> str:
        return ranked_words("DoRA" if knobs.get("use_dora") else cls.label, knobs)

    def check(self, shapes: Shapes) -> None:
        """Its dropout is at most 0.5, and without a rank map its rank fits the narrowest target (B·A's rank is at
        most min(in, out))."""
        super().check(shapes)
        if not 0.0 <= self.dropout <= 0.5:
            raise ConfigError(f"adapter.dropout: must be between 0 and 0.5 (got {self.dropout})")
        narrowest = min(shapes, key=lambda m: min(shapes[m]))
        if self.rank_map is None and self.rank > min(shapes[narrowest]):
            raise ConfigError(f"adapter.rank: {self.rank} is larger than {narrowest} ({shapes[narrowest][0]} -> "
                              f"{shapes[narrowest][1]} features), where LoRA's rank cannot exceed "
                              f"{min(shapes[narrowest])}; lower it")


@dataclass
class LokrAdapterConfig(RankedAdapterConfig):
    """LoKr: ΔW = kron(w1, w2), adapter.rank / adapter.alpha size and scale its low-rank factors; its own two
    dropouts below."""

    _target_: str = "sidestep.adapters.lokr.Lokr"
    factor: int = -1  # split of each width into two factors: -1 the most even split, N a factor at most N
    decompose_both: bool = False  # also make the small Kronecker factor low-rank
    rank_dropout: float = 0.0  # drops rows of ΔW while training
    module_dropout: float = 0.0  # skips the whole adapter of a module while training

    label: ClassVar[str] = "LoKr"
    dropouts: ClassVar[Tuple[str, ...]] = ("rank_dropout", "module_dropout")

    def check(self, shapes: Shapes) -> None:
        if self.factor == 0 or self.factor < -1:
            raise ConfigError(f"adapter.factor: must be -1 (the most even split) or a positive factor (got {self.factor})")
        super().check(shapes)


@dataclass
class LohaAdapterConfig(RankedAdapterConfig):
    """LoHa: ΔW = (w1a·w1b) ⊙ (w2a·w2b), each of adapter.rank, scaled by adapter.alpha / adapter.rank; its own two
    dropouts below."""

    _target_: str = "sidestep.adapters.loha.Loha"
    rank_dropout: float = 0.0
    module_dropout: float = 0.0

    label: ClassVar[str] = "LoHa"
    dropouts: ClassVar[Tuple[str, ...]] = ("rank_dropout", "module_dropout")


@dataclass
class OftAdapterConfig(AdapterConfig):
    """OFT: rotates each target's input features in blocks of `block_size` (no rank or alpha: the block size sets
    the size); module_dropout is its dropout."""

    _target_: str = "sidestep.adapters.oft.Oft"
    block_size: int = 32  # must divide the input width of every target
    module_dropout: float = 0.0
    use_cayley_neumann: bool = True  # PEFT's faster approximate Cayley transform (false: the exact one)

    label: ClassVar[str] = "OFT"
    scalable: ClassVar[bool] = False  # PEFT scales no rotation: OFT plays at strength 1
    dropouts: ClassVar[Tuple[str, ...]] = ("module_dropout",)

    @classmethod
    def words(cls, knobs: Mapping[str, Any]) -> str:
        return f"{cls.label} block size {knobs.get('block_size')}"

    def check(self, shapes: Shapes) -> None:
        if self.block_size < 2:
            raise ConfigError(f"adapter.block_size: must be at least 2 (got {self.block_size})")
        for module, (features, _) in shapes.items():
            if features % self.block_size:
                raise ConfigError(f"adapter.block_size: {self.block_size} does not divide {module}'s {features} input "
                                  "features; pick a divisor of every target's width (e.g. 16 or 32)")
        super().check(shapes)


ADAPTER_SCHEMAS = {"lora": LoraAdapterConfig, "lokr": LokrAdapterConfig, "loha": LohaAdapterConfig,
                   "oft": OftAdapterConfig}


def knobs_of(schema: type) -> Tuple[str, ...]:
    """A schema's knobs: its fields, not the ClassVar facts that `__dataclass_fields__` lists too."""
    return tuple(f.name for f in fields(schema))


def adapter_schema(target: Optional[str]) -> Optional[type]:
    """The schema of the adapter type a `_target_` names (None: a config saved before `adapter=` existed, so LoRA);
    None for a target `adapter=` does not offer."""
    if target is None:
        return next(iter(ADAPTER_SCHEMAS.values()))
    return next((s for s in ADAPTER_SCHEMAS.values() if s._target_ == target), None)


@dataclass
class SchedulerConfig:
    """`instantiate(cfg.scheduler)(total_steps=N)` gives the LR multiplier for `LambdaLR`: a linear warm-up, then the
    schedule's shape over the remaining steps (`training/lr_schedules.py`). Subclasses add a schedule's own knobs and
    check them in `check`."""

    _target_: str = MISSING
    _partial_: bool = True
    warmup_steps: int = 100  # optimizer steps; the LR ramps linearly from warmup_start_factor x lr to lr
    warmup_start_factor: float = 0.1  # the LR of the first warm-up step, as a fraction of optimizer.lr

    @classmethod
    def check(cls, node) -> None:
        """Raise `ConfigError` naming the first of the schedule's knobs that is out of its range."""
        _require(node.warmup_steps >= 0, "warmup_steps", f"must be >= 0 (got {node.warmup_steps})")
        _require(0 <= node.warmup_start_factor <= 1, "warmup_start_factor",
                 f"must be between 0 and 1 (got {node.warmup_start_factor})")


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"scheduler.{key}: {message}")


@dataclass
class CosineSchedulerConfig(SchedulerConfig):
    _target_: str = "sidestep.training.lr_schedules.Cosine"


@dataclass
class LinearSchedulerConfig(SchedulerConfig):
    _target_: str = "sidestep.training.lr_schedules.Linear"


@dataclass
class ConstantSchedulerConfig(SchedulerConfig):
    """No warm-up and no decay, whatever `warmup_steps` says (the schedule Prodigy needs)."""

    _target_: str = "sidestep.training.lr_schedules.Constant"
    warmup_steps: int = 0


@dataclass
class ConstantWithWarmupSchedulerConfig(SchedulerConfig):
    _target_: str = "sidestep.training.lr_schedules.ConstantWithWarmup"


@dataclass
class CosineWithRestartsSchedulerConfig(SchedulerConfig):
    """SGDR's cosine: the steps after warm-up split into `cycles` equal cycles, each falling from lr to the floor
    and restarting at lr; after the last the LR stays at the floor."""

    _target_: str = "sidestep.training.lr_schedules.CosineWithRestarts"
    cycles: int = 3  # cosine cycles after warm-up, each restarting at optimizer.lr
    eta_min: float = 0.0  # the floor each cycle falls to, as a fraction of optimizer.lr

    @classmethod
    def check(cls, node) -> None:
        super().check(node)
        _require(node.cycles >= 1, "cycles", f"must be at least 1 (got {node.cycles})")
        _require(0 <= node.eta_min < 1, "eta_min", f"must be in [0, 1), a fraction of optimizer.lr (got {node.eta_min})")


@dataclass
class PolynomialSchedulerConfig(SchedulerConfig):
    """After warm-up: end + (1 - end) x (1 - progress) ** power, in fractions of lr (power 1 is the linear decay)."""

    _target_: str = "sidestep.training.lr_schedules.Polynomial"
    power: float = 2.0  # 1: linear; above 1 falls fast then slowly; below 1 stays high longer
    end_factor: float = 0.0  # the LR at the last step, as a fraction of optimizer.lr

    @classmethod
    def check(cls, node) -> None:
        super().check(node)
        _require(node.power > 0, "power", f"must be > 0 (got {node.power})")
        _require(0 <= node.end_factor <= 1, "end_factor",
                 f"must be between 0 and 1, a fraction of optimizer.lr (got {node.end_factor})")


SCHEDULER_SCHEMAS = {
    "constant": ConstantSchedulerConfig,
    "constant_with_warmup": ConstantWithWarmupSchedulerConfig,
    "cosine": CosineSchedulerConfig,
    "cosine_with_restarts": CosineWithRestartsSchedulerConfig,
    "linear": LinearSchedulerConfig,
    "polynomial": PolynomialSchedulerConfig,
}


@dataclass
class AttentionConfig:
    """Which attention blocks of each DiT layer the adapter's attention targets sit in."""

    blocks: List[AttentionBlock] = field(default_factory=lambda: list(AttentionBlock))


@dataclass
class TimestepsConfig:
    """How timesteps are drawn and how often the text condition is dropped (see training/flow_matching.py)."""

    mode: TimestepMode = TimestepMode.fixed
    cfg_ratio: float = 0.15
    discrete_timesteps: List[float] = field(default_factory=list)  # vanilla only
    min_snr_gamma: Optional[float] = None
