"""The typed schema of every knob in `conf/`.

Each config group's YAML extends one of these dataclasses (registered in Hydra's ConfigStore as
`schema/<group>/<name>`), so a typo or a wrong type fails at compose time; `checks.py` then checks ranges.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import MISSING, DictConfig, OmegaConf

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
    """`tiny` only: keyword arguments of the random VAE, Qwen3 text encoder and condition encoder (DESIGN §8)."""

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
    variant: str = MISSING  # tiny | turbo | base | sft
    checkpoint_dir: Optional[str] = None  # ACE-Step `checkpoints/` root; unused by `tiny`
    is_turbo: bool = False
    timestep_mu: float = -0.4
    timestep_sigma: float = 1.0
    init_seed: int = 0  # `tiny` only: seed of its random weights, so every run starts from the same base
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


ALPHA_PER_RANK = 2.0  # lora.alpha when not given: this times the rank, so a sweep over rank keeps the scale


@dataclass
class LoraConfig:
    rank: int = 64
    alpha: Optional[float] = None  # null: ALPHA_PER_RANK x rank (resolved by `prepare`)
    alpha_ratio: Optional[float] = None  # when set, alpha = alpha_ratio x rank (a sweeper's search knob)
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
    attention_backend: str = "auto"  # auto | native | flash | _flash_3 | flex | xformers | _native_* (diffusers' names)
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
    dataset_dir: Optional[str] = None
    synthetic: Optional[SyntheticConfig] = None
    crop_seconds: Optional[float] = None
    num_workers: Optional[int] = None  # null: the CPU cores this process may use, less one, at most 4
    pin_memory: bool = True
    prefetch_factor: int = 2
    persistent_workers: bool = True
    on_bad_sample: str = "error"  # error | skip: what an unusable sample file does
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
    trigger_position: str = "prepend"  # prepend | append | replace
    force: bool = False  # redo songs whose tensors are up to date
    tile_seconds: float = 30.0  # VAE encoding window: memory stays flat however long the song
    tile_overlap_seconds: float = 2.0  # context on each side of a window, encoded and discarded
    max_text_tokens: int = 256
    max_lyric_tokens: int = 2048
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 on a GPU, fp32 on the CPU


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

    every_n_epochs: Optional[int] = None
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
    precision: str = "auto"
    model: ModelConfig = MISSING  # used when the source does not say what it was trained on
    ui: UIConfig = field(default_factory=UIConfig)


RUN_NAME = re.compile(r"[A-Za-z0-9_-]+")


@dataclass
class RunConfig:
    """What this run is called: its run dir (`outputs/<date>/<name>/`, `<name>-<time>` for a name you give), its
    ComfyUI file and its ACE-Step adapter."""

    name: str = "${sidestep_run_name:${now:%Y%m%d-%H%M%S}}"  # default: <dataset or experiment>-<start time>


@dataclass
class ExportConfig:
    """The adapter files written at the end of training and by `python -m sidestep.export`."""

    dtype: str = "bf16"  # fp32 | bf16 | fp16; training and checkpoints stay fp32


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    optimizer: OptimizerConfig = MISSING
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
    preprocess: PreprocessSettings = field(default_factory=PreprocessSettings)
    sample: SampleSettings = field(default_factory=SampleSettings)


STAMPED = re.compile(r"-\d{8}-\d{6}$")  # a start time at the end of a run's name


def default_run_name(time: str, _root_: DictConfig) -> str:
    """`<dataset folder or experiment>-<time>`, and `-<job number>` in a sweep, in letters, digits, - and _ (it
    becomes file names and a PEFT adapter name, which may not hold a dot)."""
    folder = OmegaConf.select(_root_, "data.dataset_dir") or OmegaConf.select(_root_, "preprocess.audio_dir")
    experiment, job = None, None
    try:
        hydra = HydraConfig.get()
        experiment = hydra.runtime.choices.get("experiment")
        job = hydra.job.num if hydra.mode == RunMode.MULTIRUN else None
    except ValueError:  # composed outside a Hydra run (tests, sidestep.rerun's check)
        pass
    base = Path(str(folder)).name if folder else experiment or "run"
    parts = [re.sub(r"[^A-Za-z0-9_-]+", "-", base).strip("-") or "run", time] + ([str(job)] if job is not None else [])
    return "-".join(parts)


def run_dir_leaf(name: str, time: str) -> str:
    """The run dir's last folder: the name, which by default already ends in the start time; a name the user gave
    gets `-<start time>` added, so a second run of the same name never writes into the first one's folder (a
    rerun of a saved config swaps the earlier start time for its own)."""
    return name if name.endswith(time) else f"{STAMPED.sub('', name)}-{time}"


def register_schemas() -> None:
    """Make the schemas available to the YAML files: each extends `/schema/<group>/<name>@_here_`."""
    if not OmegaConf.has_resolver("sidestep_run_name"):
        OmegaConf.register_new_resolver("sidestep_run_name", default_run_name)
        OmegaConf.register_new_resolver("sidestep_run_dir_leaf", run_dir_leaf)
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="preprocess_schema", node=PreprocessConfig)
    cs.store(name="sample_schema", node=SampleConfig)
    for group, schema in [("model", ModelConfig), ("scheduler", SchedulerConfig), ("attention", AttentionConfig),
                          ("training", TrainingConfig), ("data", DataConfig)]:
        cs.store(group=f"schema/{group}", name="base", node=schema)
    for name, schema in OPTIMIZER_SCHEMAS.items():
        cs.store(group="schema/optimizer", name=name, node=schema)


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
