"""The typed schema of every knob in `conf/`, and its one default: the whole config of a training run
(`TrainConfig`) and of the other commands, with the groups that build a part in `parts.py`.

Each config group's YAML extends one of these dataclasses (registered in Hydra's ConfigStore as
`schema/<group>/<name>`) and holds only what differs from it, so a typo or a wrong type fails at compose time;
`checks.py` then checks ranges.
"""

from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from sidestep.config.choices import (
    AnalyzePolicy,
    AttentionBackend,
    ExportDtype,
    Normalize,
    OnProblem,
    Precision,
    TriggerPosition,
)
from sidestep.config.parts import (
    ADAPTER_SCHEMAS,
    OPTIMIZER_SCHEMAS,
    SCHEDULER_SCHEMAS,
    AdapterConfig,
    AttentionConfig,
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    SchedulerConfig,
    TimestepsConfig,
)

LATENT_FPS = 25  # 48 kHz audio, VAE downsampling 1920


ALPHA_PER_RANK = 2.0  # adapter.alpha when not given: this times the rank, so a sweep over rank keeps the scale


@dataclass
class TrainerConfig:
    epochs: int = 100  # passes over the dataset
    max_steps: Optional[int] = None  # optimizer steps; caps `epochs` when set
    batch_size: int = 1  # samples per forward pass (x gradient_accumulation per optimizer step)
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
    budget_params: Optional[int] = None  # default: what adapter.rank on every candidate module would train
    ranks: List[int] = field(default_factory=lambda: [4, 8, 16, 32, 64, 128])


@dataclass
class AnalyzeSettings:
    """Labels measured from the audio (tempo, key, time signature): how sure a value must be to be written."""

    min_bpm_confidence: float = 0.5  # share of the song whose local tempo agrees with the global one
    min_key_confidence: float = 0.25  # margin of the best key profile over the next, 0.15 of correlation = 1
    min_signature_confidence: float = 0.3  # lead of the winning bar grouping, 0.5 standard deviations = 1
    workers: Optional[int] = None  # processes; null: one per CPU core


@dataclass
class AnalyzeConfig(AnalyzeSettings):
    """`python -m sidestep.analyze SONGS_DIR`: measure labels, write them into the sidecars and analysis.json."""

    songs_dir: Optional[str] = None
    write: AnalyzePolicy = AnalyzePolicy.fill_missing
    force: bool = False  # measure songs again even when analysis.json has them with the same audio
    ui: UIConfig = field(default_factory=UIConfig)


@dataclass
class PreprocessSettings:
    """Songs -> training tensors: `python -m sidestep.preprocess`, or `preprocess.*` before training."""

    audio_dir: Optional[str] = None  # a folder of songs (WAV, FLAC, MP3, M4A, ...: the README's list), searched recursively
    out_dir: Optional[str] = None  # in training: default <run>/dataset
    dataset_json: Optional[str] = None  # ACE-Step dataset-builder labels; default: sidecars beside each song
    max_duration: float = 240.0  # seconds; longer songs are cut
    trigger_tag: Optional[str] = None  # a word added to every caption, to call the style up at generation time
    trigger_position: TriggerPosition = TriggerPosition.prepend
    force: bool = False  # redo songs whose tensors are up to date
    analyze: AnalyzePolicy = AnalyzePolicy.off  # measure BPM, key and time signature into the sidecars first
    tile_seconds: float = 30.0  # VAE encoding window: memory stays flat however long the song
    tile_overlap_seconds: float = 2.0  # context on each side of a window, encoded and discarded
    max_text_tokens: int = 256
    max_lyric_tokens: int = 2048
    normalize: Normalize = Normalize.none  # one gain per song before encoding: none (as mastered) | peak | lufs
    target_lufs: float = -14.0  # `lufs`: integrated loudness (ITU-R BS.1770) each song is brought to
    target_peak_db: float = -1.0  # `peak`: each song's sample peak; `lufs`: the ceiling its gain never lifts it over
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
    duration: Optional[float] = None  # seconds; null: the run's sample length (its songs' median, at most 30 s)
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
    timesteps: TimestepsConfig = MISSING
    data: DataConfig = MISSING
    run: RunConfig = field(default_factory=RunConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    ui: UIConfig = field(default_factory=UIConfig)
    resume_from: Optional[str] = None  # a checkpoint dir, or `latest` (newest complete one of hydra.run.dir)
    resume: ResumeConfig = field(default_factory=ResumeConfig)
    estimate: EstimateConfig = field(default_factory=EstimateConfig)
    preprocess: PreprocessSettings = field(default_factory=lambda: PreprocessSettings(device="${trainer.device}"))
    sample: SampleSettings = field(default_factory=SampleSettings)


# groups with a schema per option
CHOSEN_BY_TARGET = {"optimizer": OPTIMIZER_SCHEMAS, "adapter": ADAPTER_SCHEMAS, "scheduler": SCHEDULER_SCHEMAS}



def option_name(group: str, node: DictConfig) -> str:
    """The `group=` option a composed group node is (`prodigy` for a `ProdigyConfig`); a part of the user's own
    (`--allow-target`) by the last word of its `_target_`."""
    schema = OmegaConf.get_type(node)
    found = (name for name, option in CHOSEN_BY_TARGET[group].items() if option is schema)
    return next(found, str(node.get("_target_")).rsplit(".", 1)[-1])
