"""Data order owned by the run: a fresh seeded permutation every epoch, the same on every machine.

With `lengths` (whole songs, no crop), the order is bucketed: within each window of `BUCKET_WINDOW` batches of the
permutation, samples are sorted by length, cut into batches, and the batches shuffled, so the songs of a batch
are of similar length and `CropCollate` cuts them to a common length with no padded frame. Every sample is still
seen once per epoch, and the order still depends only on `seed + epoch`.

With `repeats` (a mix of folders, `data.datasets`), sample `i` is in the epoch's draw `repeats[i]` times: the
permutation is over that pool, bucketing included, so every sample is seen exactly its repeats an epoch.
"""

from typing import Iterator, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Sampler

BUCKET_WINDOW = 8  # batches whose samples are sorted together: larger groups closer lengths, smaller mixes more


class EpochSampler(Sampler[Tuple[int, int]]):
    """Yields `(epoch, index)`; the permutation depends only on `seed + epoch` (no global RNG)."""

    def __init__(self, size: int, seed: int, shuffle: bool = True, lengths: Optional[Sequence[int]] = None,
                 batch_size: int = 1, repeats: Optional[Sequence[int]] = None):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.pool = [i for i in range(size) for _ in range(1 if repeats is None else repeats[i])]
        self.lengths, self.batch_size = lengths, batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pool)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        order = [self.pool[j] for j in torch.randperm(len(self.pool), generator=gen).tolist()] if self.shuffle \
            else list(self.pool)
        if self.lengths is not None and self.batch_size > 1 and len(set(self.lengths)) > 1:  # equal: nothing to group
            order = self._bucketed(order, gen)
        return iter([(self.epoch, i) for i in order])

    def _bucketed(self, order: List[int], gen: torch.Generator) -> List[int]:
        span = self.batch_size * BUCKET_WINDOW
        batches = []
        for start in range(0, len(order), span):
            window = sorted(order[start:start + span], key=lambda i: self.lengths[i])  # stable: ties stay shuffled
            batches += [window[i:i + self.batch_size] for i in range(0, len(window), self.batch_size)]
        full = [b for b in batches if len(b) == self.batch_size]  # a short batch stays last, as the loader expects
        shuffled = [full[i] for i in torch.randperm(len(full), generator=gen).tolist()] if self.shuffle else full
        return [i for batch in shuffled + [b for b in batches if len(b) < self.batch_size] for i in batch]
