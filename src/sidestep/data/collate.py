"""Batching: cut every sample of a batch to one length.

The length is the crop length, or the batch's longest sample when that is shorter; with `shortest` (whole songs
bucketed by length, see `EpochSampler`) it is the batch's shortest sample, so no frame is padding. Longer samples
are cut at a random offset (seeded by run seed, epoch and sample index, so any worker draws the same); shorter
ones are zero-padded and their padding is masked out of the loss. Text conditions are padded to the longest.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
import torch


@dataclass
class CropCollate:
    seed: int
    crop_frames: Optional[int]
    patch_size: int
    shortest: bool = False

    def __call__(self, items: List[Dict[str, Any]]) -> Dict[str, Any]:
        frames = [it["target_latents"].shape[0] for it in items]
        length = max(frames) if self.crop_frames is None else min(self.crop_frames, max(frames))
        if self.shortest:
            length = min(frames)
        length = max(self.patch_size, length - length % self.patch_size)
        tokens = max(it["encoder_hidden_states"].shape[0] for it in items)
        cut = [self._cut(it, length) for it in items]
        return {
            "target_latents": torch.stack([c["target_latents"] for c in cut]),
            "context_latents": torch.stack([c["context_latents"] for c in cut]),
            "attention_mask": torch.stack([c["attention_mask"] for c in cut]),
            "encoder_hidden_states": torch.stack([_pad(it["encoder_hidden_states"], tokens) for it in items]),
            "encoder_attention_mask": torch.stack([_pad(it["encoder_attention_mask"], tokens) for it in items]),
            "names": [it["name"] for it in items],
        }

    def _cut(self, item: Dict[str, Any], length: int) -> Dict[str, torch.Tensor]:
        frames = item["target_latents"].shape[0]
        rng = np.random.default_rng([self.seed, item["epoch"], item["index"]])
        start = int(rng.integers(0, frames - length + 1)) if frames > length else 0
        keys = ("target_latents", "context_latents", "attention_mask")
        return {k: _pad(item[k][start:start + length], length) for k in keys}


def _pad(x: torch.Tensor, length: int) -> torch.Tensor:
    if x.shape[0] >= length:
        return x
    pad = torch.zeros((length - x.shape[0], *x.shape[1:]), dtype=x.dtype)
    return torch.cat([x, pad])
