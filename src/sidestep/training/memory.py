"""The predicted peak memory of a training setup, shown before training and checked by `scripts/bench_memory.py`.

Peak = frozen weights + adapter (fp32 weights and gradients) + optimizer state (the bytes per parameter its schema
states, `state_bytes_per_param`) + the larger of
  - a training step: activations kept for backward (every layer's, or with gradient checkpointing each layer's input
    plus one layer recomputed) and what backward holds besides (gradient buffers, one dequantized weight);
  - a sample: the VAE, text encoder and condition encoder on the device (one at a time with `sample.offload`), as
    large as the model source's own (the tiny demo's are tiny).
Weights are counted exactly from the DiT's shapes, per storage: bf16/fp32, int8 (one byte plus a float32 scale
per row) or NF4 (half a byte, one uint8 absmax per 64 weights, their float32 absmax per 256 blocks). Activations
are counted per token from the block's code (what autograd keeps), so the prediction follows crop, batch, rank,
targets and dropout; the benchmark says how close it is.
"""

import math
from dataclasses import dataclass
from typing import Dict, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from sidestep.adapters.attach import trainable_parameters
from sidestep.config.choices import Quantize
from sidestep.config.schema import LATENT_FPS
from sidestep.models.dit import empty_dit
from sidestep.models.quantize import BLOCK_LINEAR, NF4_BLOCK
from sidestep.models.source import model_source

GB = 1024**3
NF4_NESTED_BLOCK = 256  # double quantization: the absmaxes are quantized again in blocks of 256
QUANT_TABLES = 256 * 4 + 16 * 4 + 4  # per NF4 layer: the nested code, the NF4 code, the absmax offset
# The card each `vram=` preset is for, in GiB, and what a CUDA process holds outside PyTorch's allocator (its
# context and cuBLAS workspaces: a few hundred MB, not in the prediction) that must fit beside the peak.
PRESET_CARDS_GIB = {"8gb": 8, "12gb": 12, "16gb": 16, "24gb_plus": 24}
CUDA_CONTEXT = GB // 2
# ACE-Step 1.5's sampling helpers in parameters, shared by the 2B and XL variants (the XL's condition encoder is the
# 2B's, 2048 wide): the Oobleck VAE, Qwen3-Embedding-0.6B, the condition encoder. For predictions without a checkpoint.
ACESTEP_HELPERS = {"vae": 156_000_000, "text_encoder": 596_000_000, "condition_encoder": 608_000_000}
WHOLE_SONG_SECONDS = 240  # what a prediction without a crop assumes: preprocessing's max_duration


@dataclass
class MemoryPlan:
    weights: int
    adapter: int
    optimizer: int
    activations: int
    sampling: int
    weight_kind: str

    @property
    def peak(self) -> int:
        return self.weights + self.adapter + self.optimizer + max(self.activations, self.sampling)

    def describe(self) -> str:
        last = (f"and the larger of activations {_size(self.activations)} and, while sampling, {_size(self.sampling)}"
                if self.sampling else f"activations {_size(self.activations)}")  # never held at once
        return (f"~{_size(self.peak)} peak: DiT weights {_size(self.weights)} ({self.weight_kind}), adapter + "
                f"gradients {_size(self.adapter)}, optimizer {_size(self.optimizer)}, {last}")


def card_for(peak: int) -> Optional[str]:
    """The smallest `vram=` preset whose card holds `peak` and the CUDA context beside it; None: none of them."""
    fitting = [p for p, gib in PRESET_CARDS_GIB.items() if peak + CUDA_CONTEXT <= gib * GB]
    return min(fitting, key=PRESET_CARDS_GIB.get) if fitting else None


def fits_card(peak: int) -> str:
    """The setup summary's word on which cards the run fits: the XL models outgrow the small presets' cards."""
    card = card_for(peak)
    if card is None:
        return f"more than a {max(PRESET_CARDS_GIB.values())} GB card holds"
    return f"fits a {PRESET_CARDS_GIB[card]} GB card (vram={card}) or larger"


def _size(count: int) -> str:
    return f"{count / GB:.2f} GB" if count >= GB / 10 else f"{count / 2**20:.1f} MB"


def weight_bytes(model_cfg: DictConfig, quantize: Optional[str], dtype: torch.dtype) -> int:
    """The frozen DiT's bytes, exact: what its parameters hold once loaded as `model.quantize` says."""
    element = torch.empty(0, dtype=dtype).element_size()
    total = 0
    for name, param in empty_dit(model_cfg).named_parameters():
        owner = name.rpartition(".")[0]
        if quantize is None or not (name.endswith(".weight") and param.ndim == 2 and BLOCK_LINEAR.fullmatch(owner)):
            total += param.numel() * element
        else:
            total += quantized_bytes(param.shape, Quantize(quantize))
    return total


def quantized_bytes(shape, quantize: Quantize) -> int:
    rows, columns = shape
    n = rows * columns
    if quantize == Quantize.int8:
        return n + 4 * rows
    blocks = math.ceil(n / NF4_BLOCK)
    return math.ceil(n / 2) + blocks + 4 * math.ceil(blocks / NF4_NESTED_BLOCK) + QUANT_TABLES


def activation_bytes(cfg: DictConfig, tokens: int, encoder_tokens: int, element: int) -> int:
    """What autograd keeps for one forward of `tokens` DiT tokens (batch x frames / patch), and backward's extra."""
    arch, adapter = cfg.model.arch, cfg.adapter
    h, ff = arch.hidden_size, arch.intermediate_size
    q, kv = arch.num_attention_heads * arch.head_dim, arch.num_key_value_heads * arch.head_dim
    # Per token of a block: self-attention (norm in/out, modulated input, q/k/v and their norms, RoPE, attention out,
    # gated output), cross-attention (norm in/out, q and its norm, attention out), SwiGLU MLP (norm in/out,
    # modulated input, gate, silu, up, product, gated output).
    block = (4 * h + 4 * q + 4 * kv) + (2 * h + 3 * q) + (4 * h + 4 * ff)
    kept_by_adapter = sum(_lora_saved(module, h, q, kv, ff, adapter) for module in adapter.target_modules)
    cross = 2 * kv * encoder_tokens * (2 if "cross_attn" in cfg.attention.blocks else 1)  # per sample, per layer
    per_layer = (block + kept_by_adapter) * tokens * element + cross * element * cfg.trainer.batch_size
    layers = arch.num_hidden_layers
    if cfg.trainer.gradient_checkpointing:
        kept = layers * h * tokens * element + per_layer  # each layer's input, plus the one being recomputed
    else:
        kept = layers * per_layer
    backward = 4 * h * tokens * element + _largest_dequantized(cfg, element)
    return kept + backward


def _lora_saved(module: str, h: int, q: int, kv: int, ff: int, adapter: DictConfig) -> int:
    """Per token, per block: the dropout output and mask (when dropout is on) and the rank-wide middle (a type
    without `adapter.rank`, OFT, is counted at its block size)."""
    width_in = {"o_proj": q, "down_proj": ff}.get(module, h)
    copies = 1 if module in ("gate_proj", "up_proj", "down_proj") else 2  # attention targets: self and cross
    dropout = width_in * 1.25 if adapter.get("dropout", 0) > 0 else 0  # the masked copy plus a one-byte mask
    return copies * int(dropout + adapter.get("rank", adapter.get("block_size", 0)))


def _largest_dequantized(cfg: DictConfig, element: int) -> int:
    """A quantized layer's backward dequantizes its weight: one full-precision copy of the largest, at a time."""
    if cfg.model.get("quantize") is None:
        return 0
    return cfg.model.arch.hidden_size * cfg.model.arch.intermediate_size * element


def sampling_bytes(cfg: DictConfig, element: int, helpers: Optional[Dict[str, int]] = None) -> int:
    """The helpers on the device while samples render: all of them, or the largest with `sample.offload`. Their
    sizes (`helpers`, in parameters) are by default those of the model source the run loads."""
    if cfg.sample.every_n_epochs is None and cfg.sample.every_n_steps is None:
        return 0
    sizes = [n * element for n in (helpers or model_source(cfg.model).helper_parameters()).values()] or [0]
    return max(sizes) if cfg.sample.offload else sum(sizes)


def predict(cfg: DictConfig, dtype: torch.dtype, frames: int, encoder_tokens: int = 512,
            helpers: Optional[Dict[str, int]] = None, trainable: Optional[int] = None) -> MemoryPlan:
    """The peak of training `cfg` with the DiT's weights in `dtype`, on batches of `frames` latent frames (the
    crop, or the longest song). `trainable`: the adapter's parameter count when the caller has it already."""
    element = torch.empty(0, dtype=dtype).element_size()
    quantize = cfg.model.get("quantize")
    tokens = cfg.trainer.batch_size * math.ceil(frames / cfg.model.arch.patch_size)
    trainable = trainable_parameters(cfg) if trainable is None else trainable
    return MemoryPlan(
        weights=weight_bytes(cfg.model, quantize, dtype),
        adapter=trainable * 8,
        optimizer=int(trainable * OmegaConf.get_type(cfg.optimizer).state_bytes_per_param),  # its schema says
        activations=activation_bytes(cfg, tokens, encoder_tokens, element),
        sampling=sampling_bytes(cfg, element, helpers),
        weight_kind=str(quantize) if quantize else {2: "bf16", 4: "fp32"}.get(element, str(dtype)),
    )


def crop_frames(cfg: DictConfig, longest: int) -> int:
    """Latent frames per training sample: the crop when set (and shorter than the longest song), else the longest."""
    crop = cfg.data.crop_seconds
    return longest if crop is None else min(longest or int(crop * LATENT_FPS), int(crop * LATENT_FPS))


def loaded_bytes(model: torch.nn.Module) -> int:
    """What a loaded model really holds: its parameters and buffers, plus bitsandbytes' quantization statistics
    (NF4 absmaxes and codes, int8 row scales), each storage once. The check on `weight_bytes`."""
    tensors = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        tensors[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
        state = getattr(tensor, "quant_state", None)
        extra = [getattr(tensor, "SCB", None)]
        if state is not None:
            extra += [state.absmax, state.code, state.offset]
            if state.state2 is not None:
                extra += [state.state2.absmax, state.state2.code]
        for item in extra:
            if isinstance(item, torch.Tensor):
                tensors[item.data_ptr()] = item.numel() * item.element_size()
    return sum(tensors.values())
