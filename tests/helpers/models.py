"""The tiny DiT's outputs on a fixed batch, trained-looking adapter weights, ACE-Step's own module names on it, and
ACE-Step-style checkpoint folders written from it."""

import json

import torch
from safetensors.torch import save_file

from sidestep.models.keymap import diffusers_key_to_decoder
from sidestep.models.source import model_source

TINY_ARCH = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, in_channels=192, audio_acoustic_hidden_dim=64, patch_size=2,
                 sliding_window=8, rope_theta=1_000_000.0, encoder_hidden_size=64)


def dit_outputs(model: torch.nn.Module, seed: int = 0) -> torch.Tensor:
    """The DiT's prediction for a fixed random batch of two (tiny-model widths), for comparing models."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 12, 64, generator=gen)
    enc = torch.randn(2, 5, 64, generator=gen)
    ctx = torch.randn(2, 12, 128, generator=gen)
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        return model(hidden_states=x, timestep=t, timestep_r=t, encoder_hidden_states=enc, context_latents=ctx,
                     return_dict=False)[0]


def randomize_lora(transformer: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """LoRA weights far from their zero-effect start, as if trained; returns the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    for param in transformer.parameters():
        if param.requires_grad:
            param.data = torch.randn(param.shape, generator=gen) * 0.1
    return transformer.eval()


class Attention(torch.nn.Module):
    def __init__(self, attn):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = attn.to_q, attn.to_k, attn.to_v, attn.to_out[0]


class Layer(torch.nn.Module):
    def __init__(self, block):
        super().__init__()
        self.self_attn, self.cross_attn, self.mlp = Attention(block.self_attn), Attention(block.cross_attn), block.mlp


class Decoder(torch.nn.Module):
    """ACE-Step's decoder module names on the tiny model's weights."""

    def __init__(self, transformer):
        super().__init__()
        self.layers = torch.nn.ModuleList(Layer(b) for b in transformer.layers)


def write_original(folder, reference, shards=1, extra=None):
    """An ACE-Step-style variant folder: original key names, encoder/tokenizer keys beside the decoder's."""
    folder.mkdir(parents=True)
    state = {diffusers_key_to_decoder(k): v.contiguous() for k, v in reference.transformer.state_dict().items()}
    state.update({"encoder.lyric_encoder.layers.0.self_attn.q_proj.weight": torch.zeros(4, 4),
                  "tokenizer.embed.weight": torch.zeros(2, 2), "null_condition_emb": reference.null_condition_emb,
                  **(extra or {})})
    keys = sorted(state)
    if shards == 1:
        save_file(state, folder / "model.safetensors")
    else:
        weight_map = {}
        for i in range(shards):
            name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            part = {k: state[k] for k in keys[i::shards]}
            save_file(part, folder / name)
            weight_map.update({k: name for k in part})
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps({**TINY_ARCH, "is_turbo": True, "timestep_mu": -0.4,
                                                    "timestep_sigma": 1.0, "data_proportion": 0.5}))
    return folder


def real_cfg(make_cfg, root, variant="turbo"):
    """The config of `model=<variant> model.checkpoint_dir=<root>`, settled on what the folder holds."""
    cfg = make_cfg(f"model={variant}", f"model.checkpoint_dir={root}")
    model_source(cfg.model).settle(cfg.model)
    return cfg
