"""Data order owned by the run: a fresh seeded permutation every epoch, the same on every machine."""

from typing import Iterator, Tuple

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[Tuple[int, int]]):
    """Yields `(epoch, index)`; the permutation depends only on `seed + epoch` (no global RNG)."""

    def __init__(self, size: int, seed: int, shuffle: bool = True):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(self.size))
        return iter([(self.epoch, i) for i in order])
