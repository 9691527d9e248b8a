"""The typed schema of every knob in `conf/`, and its one default.

Each config group's YAML extends one of these dataclasses (registered in Hydra's ConfigStore as
`schema/<group>/<name>`) and holds only what differs from it, so a typo or a wrong type fails at compose time;
`checks.py` then checks ranges. Groups that build a part name its class or function in `_target_`.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from sidestep.config.choices import (
    ATTENTION_PROJECTIONS,
    AttentionBackend,
    AttentionBlock,
    Bias,
    ExportDtype,
    OnProblem,
    Precision,
    Quantize,
    TargetModule,
    TimestepMode,
    TriggerPosition,
)
from sidestep.config.run_name import register_run_name_resolvers

LATENT_FPS = 25  # 48 kHz audio, VAE downsampling 1920


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
    variant: str = MISSING  # turbo | base | sft | auto (whatever checkpoint_dir holds) | tiny
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
    """Built with `hydra.utils.instantiate(cfg.optimizer)(params)`; subclasses add the optimizer's own kwargs."""

    _target_: str = MISSING
    _partial_: bool = True
    lr: float = 1e-4
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
class AdapterConfig:
    """The adapter type: `instantiate(cfg.adapter)` gives an `adapters.AdapterType`, which turns `lora.*` (size,
    alpha, dropout, targets) into PEFT's config for that type and writes the files each consumer loads."""

    _target_: str = MISSING


@dataclass
class LoraAdapterConfig(AdapterConfig):
    _target_: str = "sidestep.adapters.lora.Lora"
    use_rslora: bool = False  # scale by alpha / sqrt(rank) instead of alpha / rank (rank-stabilised LoRA)


ADAPTER_SCHEMAS = {"lora": LoraAdapterConfig}


@dataclass
class SchedulerConfig:
    """`instantiate(cfg.scheduler)(total_steps=N)` gives the LR multiplier for `LambdaLR`."""

    _target_: str = MISSING
    _partial_: bool = True
    warmup_steps: int = 100  # optimizer steps; the LR ramps from 10% to 100%


CONSTANT_SCHEDULER = "sidestep.training.lr_schedules.constant"


@dataclass
class AttentionConfig:
    """Which attention blocks of each DiT layer the adapter's attention targets sit in."""

    blocks: List[AttentionBlock] = field(default_factory=lambda: list(AttentionBlock))


@dataclass
class TrainingConfig:
    """How timesteps are drawn and how often the text condition is dropped (see training/flow_matching.py)."""

    mode: TimestepMode = TimestepMode.fixed
    cfg_ratio: float = 0.15
    discrete_timesteps: List[float] = field(default_factory=list)  # vanilla only
    min_snr_gamma: Optional[float] = None


ALPHA_PER_RANK = 2.0  # lora.alpha when not given: this times the rank, so a sweep over rank keeps the scale


@dataclass
class LoraConfig:
    rank: int = 64
    alpha: Optional[float] = None  # null: ALPHA_PER_RANK x rank (resolved by `prepare`)
    alpha_ratio: Optional[float] = None  # when set, alpha = alpha_ratio x rank (a sweeper's search knob)
    dropout: float = 0.1
    bias: Bias = Bias.none
    target_modules: List[TargetModule] = field(default_factory=lambda: list(ATTENTION_PROJECTIONS))
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
    precision: Precision = Precision.auto
    gradient_checkpointing: bool = False
    save_every: int = 10  # epochs
    save_every_steps: Optional[int] = None  # optimizer steps; also checkpoint mid-epoch when set
    keep_checkpoints: int = 3
    on_nonfinite: OnProblem = OnProblem.error  # what a NaN/Inf loss or gradient does
    log_every: int = 10  # optimizer steps
    log_heavy_every: int = 50  # optimizer steps
    attention_backend: AttentionBackend = AttentionBackend.auto
    compile: str = "false"  # false | blocks (each transformer block, compiled once) | full (the whole DiT)
    compile_backend: str = "inductor"  # torch.compile's backend (aot_eager: capture only, no code generation)


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
    """`instantiate(cfg.data)` gives the `data.SampleSource` that `_target_` names: a folder of preprocessed samples
    (`dataset_dir`), or the generated dataset of `synthetic`."""

    _target_: str = "sidestep.data.sources.SampleFolder"
    dataset_dir: Optional[str] = None
    synthetic: Optional[SyntheticConfig] = None
    crop_seconds: Optional[float] = None
    num_workers: Optional[int] = None  # null: the CPU cores this process may use, less one, at most 4
    pin_memory: bool = True
    prefetch_factor: int = 2
    persistent_workers: bool = True
    on_bad_sample: OnProblem = OnProblem.error  # what an unusable sample file does
    bucket_by_length: bool = True  # without crop_seconds: batch songs of similar length, so no frame is padding
    val_fraction: float = 0.0  # held out, scored at fixed timesteps and noise so runs compare


@dataclass
class ResumeConfig:
    strict: bool = True  # false: a checkpoint that does not fit loads its matching LoRA tensors only


@dataclass
class UIConfig:
    plain: bool = False  # no colour, plain log lines, no live display (train, wizard, monitor); automatic when piped
    yes: bool = False  # skip confirmations (train: the setup summary; wizard: take every default, then start)


@dataclass
class EstimateConfig:
    """`python -m sidestep.estimate`: gradient sensitivity of each candidate module, turned into a rank plan."""

    batches: int = 32
    include_mlp: bool = False  # also score the MLP projections
    budget_params: Optional[int] = None  # default: what lora.rank on every candidate module would train
    ranks: List[int] = field(default_factory=lambda: [4, 8, 16, 32, 64, 128])


@dataclass
class PreprocessSettings:
    """Songs -> training tensors: `python -m sidestep.preprocess`, or `preprocess.*` before training."""

    audio_dir: Optional[str] = None  # a folder of WAV/FLAC/OGG/MP3 songs, searched recursively
    out_dir: Optional[str] = None  # in training: default <run>/dataset
    dataset_json: Optional[str] = None  # ACE-Step dataset-builder labels; default: sidecars beside each song
    max_duration: float = 240.0  # seconds; longer songs are cut
    trigger_tag: Optional[str] = None  # a word added to every caption, to call the style up at generation time
    trigger_position: TriggerPosition = TriggerPosition.prepend
    force: bool = False  # redo songs whose tensors are up to date
    tile_seconds: float = 30.0  # VAE encoding window: memory stays flat however long the song
    tile_overlap_seconds: float = 2.0  # context on each side of a window, encoded and discarded
    max_text_tokens: int = 256
    max_lyric_tokens: int = 2048
    device: str = "auto"
    precision: Precision = Precision.auto


@dataclass
class PreprocessConfig(PreprocessSettings):
    model: ModelConfig = MISSING
    ui: UIConfig = field(default_factory=UIConfig)


@dataclass
class SamplePrompt:
    prompt: str = MISSING
    lyrics: str = "[Instrumental]"
    language: str = "en"
    bpm: Optional[int] = None
    keyscale: Optional[str] = None
    timesignature: Optional[str] = None


@dataclass
class SampleSettings:
    """Audio rendered while training (`sample.*`): `<run>/samples/step-<N>/` and TensorBoard's audio tab."""

    every_n_epochs: Optional[int] = 10
    every_n_steps: Optional[int] = None
    prompts: List[SamplePrompt] = field(default_factory=list)  # default: captions and lyrics of the training data
    count: int = 2  # prompts taken from the training data when `prompts` is empty
    duration: Optional[float] = None  # seconds; null: the training songs' median length, at most 30 s
    seed: int = 0
    steps: Optional[int] = None  # default: model.sampling
    guidance: Optional[float] = None
    shift: Optional[float] = None
    offload: bool = False  # keep the VAE and encoders on the CPU between samples (small cards)


@dataclass
class SampleConfig:
    """`python -m sidestep.sample <run | adapter | checkpoint dir>`: hear an adapter, alone or beside the base."""

    source: Optional[str] = None  # a run dir, its adapter/ or one of its checkpoints/step-N/
    prompt: Optional[str] = None
    lyrics: str = "[Instrumental]"
    language: str = "en"
    bpm: Optional[int] = None
    keyscale: Optional[str] = None
    timesignature: Optional[str] = None
    prompts: Optional[str] = None  # a YAML list of {prompt, lyrics, ...}
    count: int = 3  # captions taken from the run's training data when no prompt is given
    duration: float = 30.0
    seed: int = 0
    strength: float = 1.0
    compare: bool = False  # also render without the adapter (and at compare_strengths), same prompt and seed
    compare_strengths: List[float] = field(default_factory=list)
    steps: Optional[int] = None  # default: model.sampling
    guidance: Optional[float] = None
    shift: Optional[float] = None
    device: str = "auto"
    precision: Precision = Precision.auto
    model: ModelConfig = MISSING  # used when the source does not say what it was trained on
    ui: UIConfig = field(default_factory=UIConfig)


@dataclass
class RunConfig:
    """What this run is called: its run dir (`outputs/<date>/<name>/`, `<name>-<time>` for a name you give), its
    ComfyUI file and its ACE-Step adapter."""

    name: str = "${sidestep_run_name:${now:%Y%m%d-%H%M%S}}"  # default: <dataset or experiment>-<start time>


@dataclass
class ExportConfig:
    """The adapter files written at the end of training and by `python -m sidestep.export`."""

    dtype: ExportDtype = ExportDtype.bf16  # training and checkpoints stay fp32


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    adapter: AdapterConfig = MISSING
    scheduler: SchedulerConfig = MISSING
    attention: AttentionConfig = MISSING
    training: TrainingConfig = MISSING
    data: DataConfig = MISSING
    run: RunConfig = field(default_factory=RunConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    ui: UIConfig = field(default_factory=UIConfig)
    resume_from: Optional[str] = None  # a checkpoint dir, or `latest` (newest complete one of hydra.run.dir)
    resume: ResumeConfig = field(default_factory=ResumeConfig)
    estimate: EstimateConfig = field(default_factory=EstimateConfig)
    preprocess: PreprocessSettings = field(default_factory=lambda: PreprocessSettings(device="${trainer.device}"))
    sample: SampleSettings = field(default_factory=SampleSettings)


CHOSEN_BY_TARGET = {"optimizer": OPTIMIZER_SCHEMAS, "adapter": ADAPTER_SCHEMAS}  # groups with a schema per option


def register_schemas() -> None:
    """Make the schemas available to the YAML files: each extends `/schema/<group>/<name>@_here_`."""
    register_run_name_resolvers()
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="preprocess_schema", node=PreprocessConfig)
    cs.store(name="sample_schema", node=SampleConfig)
    for group, schema in [("model", ModelConfig), ("scheduler", SchedulerConfig), ("attention", AttentionConfig),
                          ("training", TrainingConfig), ("data", DataConfig)]:
        cs.store(group=f"schema/{group}", name="base", node=schema)
    for group, schemas in CHOSEN_BY_TARGET.items():
        for name, schema in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=schema)
