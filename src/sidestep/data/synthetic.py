"""A generated dataset with structure a small model can learn, for the demo and the tests.

Each sample belongs to one of a few "styles": a style is a fixed text condition plus a latent pattern
(a sine per channel with its own amplitude, frequency and phase). A model that reads the condition can
predict the clean latents, so the flow-matching loss falls well below its starting value. Files go through
the same reader as real data. Generated once per settings into a cache folder (atomically).
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from sidestep.atomic import atomic_dir, save_safetensors
from sidestep.config import LATENT_FPS, SyntheticConfig
from sidestep.data.dataset import MANIFEST
from sidestep.data.samples import METADATA_KEY, SampleShape


def user_cache_dir() -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "sidestep" / "cache"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sidestep"


def synthetic_dataset(cfg: SyntheticConfig, shape: SampleShape) -> Path:
    """The folder of the dataset for these settings, generating it on first use."""
    settings = {**{k: getattr(cfg, k) for k in ("num_samples", "seconds", "styles", "text_tokens", "seed")},
                "latent_dim": shape.latent_dim, "context_dim": shape.context_dim, "condition_dim": shape.condition_dim}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(cfg.cache_dir or user_cache_dir()) / f"synthetic-{digest}"
    if not (folder / MANIFEST).is_file():
        with atomic_dir(folder) as tmp:
            _write(tmp, cfg, shape, settings)
    return folder


def _write(folder: Path, cfg: SyntheticConfig, shape: SampleShape, settings: dict) -> None:
    gen = torch.Generator().manual_seed(cfg.seed)
    frames = int(round(cfg.seconds * LATENT_FPS))
    c = shape.latent_dim
    offset = torch.randn(cfg.styles, c, generator=gen)
    amplitude = 0.5 * torch.rand(cfg.styles, c, generator=gen)
    frequency = 0.5 + 2.5 * torch.rand(cfg.styles, c, generator=gen)  # Hz
    phase = 2 * torch.pi * torch.rand(cfg.styles, c, generator=gen)
    text = torch.randn(cfg.styles, cfg.text_tokens, shape.condition_dim, generator=gen)
    silence = 0.1 * torch.randn(frames, shape.context_dim - c, generator=gen)
    seconds = torch.arange(frames).float()[:, None] / LATENT_FPS
    names = []
    for i in range(cfg.num_samples):
        style = i % cfg.styles
        latents = offset[style] + amplitude[style] * torch.sin(2 * torch.pi * frequency[style] * seconds + phase[style])
        sample = {
            "target_latents": latents.contiguous(),
            "attention_mask": torch.ones(frames),
            "encoder_hidden_states": text[style].clone(),
            "encoder_attention_mask": torch.ones(cfg.text_tokens, dtype=torch.bool),
            "context_latents": torch.cat([silence, torch.ones(frames, c)], dim=1),
        }
        metadata = {"caption": f"synthetic style {style}", "lyrics": "[Instrumental]", "duration": cfg.seconds}
        name = f"sample_{i:03d}.safetensors"
        save_safetensors(sample, folder / name, metadata={METADATA_KEY: json.dumps(metadata)})
        names.append(name)
    manifest = {"metadata": {"generator": "sidestep.data.synthetic", **settings}, "samples": names, "num_samples": len(names)}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
