"""The closed sets of values some options take. As `StrEnum` fields of the schema, OmegaConf refuses anything else
when the config is composed (naming the key and the allowed values), and each member still compares and prints
as its plain string, so code reads `cfg.trainer.on_nonfinite == "skip"`."""

from enum import StrEnum


class Precision(StrEnum):
    auto = "auto"  # bf16 on a GPU that has it, else fp32
    bf16 = "bf16"
    fp16 = "fp16"
    fp32 = "fp32"


class ExportDtype(StrEnum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


TINY_VARIANTS = ("turbo", "base", "sft", "xl-turbo", "xl-base", "xl-sft")  # the folders `python -m sidestep.tiny` writes
EXPORT_FORMATS = ("diffusers", "diffusers_pipeline", "acestep", "comfyui")  # the programs an adapter is written for


class OnProblem(StrEnum):
    error = "error"
    skip = "skip"


class AttentionBackend(StrEnum):
    """diffusers' attention backends that can train and need no download: SageAttention has no backward pass, and
    hub kernels would be downloaded at run time."""

    auto = "auto"
    native = "native"
    flash = "flash"
    _flash_3 = "_flash_3"
    flex = "flex"
    xformers = "xformers"
    _native_flash = "_native_flash"
    _native_efficient = "_native_efficient"
    _native_cudnn = "_native_cudnn"
    _native_math = "_native_math"


class TimestepMode(StrEnum):
    fixed = "fixed"
    vanilla = "vanilla"


class Bias(StrEnum):
    none = "none"
    all = "all"
    lora_only = "lora_only"


class AttentionBlock(StrEnum):
    self_attn = "self_attn"
    cross_attn = "cross_attn"


class TargetModule(StrEnum):
    """The DiT projections an adapter can train, under the original ACE-Step names."""

    q_proj = "q_proj"
    k_proj = "k_proj"
    v_proj = "v_proj"
    o_proj = "o_proj"
    gate_proj = "gate_proj"
    up_proj = "up_proj"
    down_proj = "down_proj"


ATTENTION_PROJECTIONS = (TargetModule.q_proj, TargetModule.k_proj, TargetModule.v_proj, TargetModule.o_proj)


class Quantize(StrEnum):
    """How the frozen DiT's block linears are held (`model.quantize`; null: in the compute dtype)."""

    int8 = "int8"  # bitsandbytes LLM.int8: half of bf16
    nf4 = "nf4"  # bitsandbytes 4-bit NormalFloat with double quantization: about a quarter of bf16


class Normalize(StrEnum):
    """`preprocess.normalize`: one gain per song before encoding."""

    none = "none"  # as decoded
    peak = "peak"  # sample peak at preprocess.target_peak_db
    lufs = "lufs"  # integrated loudness (BS.1770) at preprocess.target_lufs, the peak kept under target_peak_db


class TriggerPosition(StrEnum):
    prepend = "prepend"
    append = "append"
    replace = "replace"


class AnalyzePolicy(StrEnum):
    """What the label analysis does with a sidecar (`python -m sidestep.analyze`, `preprocess.analyze`)."""

    fill_missing = "fill_missing"  # write a measured value where the sidecar has none (or the one it wrote before)
    overwrite = "overwrite"  # replace what the sidecar says with every confident measurement
    off = "off"  # sidecars untouched (the command still measures and writes analysis.json)
