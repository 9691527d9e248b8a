"""`model.quantize=int8|nf4` (QLoRA): the frozen DiT's block linears held by bitsandbytes, 8-bit (LLM.int8) or 4-bit
NF4 with double quantization, computing in the weights' dtype. Everything else (norms, embeddings, the time and
condition embedders, proj_in/out: a few percent of the weights) stays in full precision.

The DiT is built weightless, its block linears are swapped for bitsandbytes layers, and each tensor is placed (and,
for those layers, quantized) as it is read, so memory never holds a full-precision copy of the model beside the
quantized one. PEFT puts its bitsandbytes LoRA layers on them (`is_loaded_in_4bit/8bit` tells it to).
"""

import re
from typing import Dict, Iterable, Tuple

import bitsandbytes as bnb
import torch

from sidestep.config.choices import Quantize

BLOCK_LINEAR = re.compile(r"layers\.\d+\..+")  # the transformer blocks: attention and MLP projections
NF4_BLOCK = 64  # bitsandbytes' default 4-bit block size (one absmax per 64 weights)
INT8_THRESHOLD = 6.0  # LLM.int8's outlier threshold: activation columns above it run in full precision


def quantized_layers(transformer: torch.nn.Module) -> Dict[str, torch.nn.Module]:
    """The bitsandbytes layers of a DiT, by name (empty for a full-precision one)."""
    return {n: m for n, m in transformer.named_modules() if isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))}


def make_quantizable(transformer: torch.nn.Module, mode: Quantize, compute_dtype: torch.dtype) -> None:
    """Swap each block `nn.Linear` of a weightless (meta-device) DiT for an empty bitsandbytes layer."""
    for name, module in list(transformer.named_modules()):
        if not (type(module) is torch.nn.Linear and BLOCK_LINEAR.fullmatch(name)):
            continue
        parent, _, leaf = name.rpartition(".")
        with torch.device("meta"):
            if mode == Quantize.nf4:
                layer = bnb.nn.Linear4bit(module.in_features, module.out_features, bias=module.bias is not None,
                                          compute_dtype=compute_dtype, compress_statistics=True, quant_type="nf4")
                # its CPU inference repacking (eval mode, no grad) has no backward: training after a sample would
                # stop gradients at every base layer
                layer.support_avx512bf16_for_cpu = False
            else:
                layer = bnb.nn.Linear8bitLt(module.in_features, module.out_features, bias=module.bias is not None,
                                            has_fp16_weights=False, threshold=INT8_THRESHOLD)
        transformer.get_submodule(parent).register_module(leaf, layer)
    transformer.is_loaded_in_4bit = mode == Quantize.nf4
    transformer.is_loaded_in_8bit = mode == Quantize.int8


def place_weights(transformer: torch.nn.Module, tensors: Iterable[Tuple[str, torch.Tensor]],
                  device: torch.device) -> Dict[str, Tuple[int, ...]]:
    """Put each arriving tensor into the weightless model: a bitsandbytes layer's weight is quantized on `device`
    at once (the full-precision tensor is then dropped), the rest is kept as it comes; in a quantized model it is
    copied, so no tensor keeps the weight file's memory map (and every page of it read) alive after loading.
    Returns what arrived (name: shape); names the model lacks are skipped, for the caller to report."""
    owners = dict(transformer.named_modules())
    quantized = bool(quantized_layers(transformer))
    arrived = {}
    for name, tensor in tensors:
        arrived[name] = tuple(tensor.shape)
        owner, _, leaf = name.rpartition(".")
        module = owners.get(owner)
        current = None if module is None else getattr(module, leaf, None)
        if not isinstance(current, torch.Tensor) or tuple(current.shape) != tuple(tensor.shape):
            continue
        if leaf == "weight" and isinstance(module, bnb.nn.Linear4bit):
            empty = module.weight  # the code make_quantizable chose, said once
            module.weight = bnb.nn.Params4bit(tensor, requires_grad=False, compress_statistics=empty.compress_statistics,
                                              quant_type=empty.quant_type, blocksize=NF4_BLOCK,
                                              module=module)._quantize(device)
        elif leaf == "weight" and isinstance(module, bnb.nn.Linear8bitLt):
            module.weight = bnb.nn.Int8Params(tensor, requires_grad=False, has_fp16_weights=False)._quantize(device)
        elif leaf in module._parameters:
            module._parameters[leaf] = torch.nn.Parameter(tensor.clone() if quantized else tensor, requires_grad=False)
        else:
            module._buffers[leaf] = tensor.clone() if quantized else tensor
    return arrived
