"""Preprocessed sample files in ACE-Step's own layout."""

import torch

from sidestep.data.samples import SampleShape

SHAPE = SampleShape(latent_dim=64, context_dim=128, condition_dim=64, min_frames=2)


def sample(frames=50, tokens=7, width=64, dtype=torch.float32):
    """The layout ACE-Step's dataset builder writes (bf16 on GPU machines)."""
    return {
        "target_latents": torch.randn(frames, 64).to(dtype),
        "attention_mask": torch.ones(frames),
        "encoder_hidden_states": torch.randn(tokens, width).to(dtype),
        "encoder_attention_mask": torch.ones(tokens, dtype=torch.bool),
        "context_latents": torch.randn(frames, 128).to(dtype),
        "metadata": {"caption": "jazz", "duration": frames / 25},
    }


def write_pt(path, data):
    torch.save(data, path)
    return path
