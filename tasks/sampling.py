"""Training order: length-grouped batches (less padding), and the seed they follow."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


class LengthGroupedSampler(Sampler[int]):
    """Shuffled order in which neighbours have similar lengths: shuffle, cut into mega-batches of
    50 batches, sort each by length, then shuffle the batches (the longest batch goes first so an
    out-of-memory error shows up at once)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, mega_batch: int = 50, seed: int = 0):
        self.lengths, self.batch_size, self.mega, self.seed, self.epoch = (
            list(lengths),
            batch_size,
            mega_batch,
            seed,
            0,
        )

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        rng = random.Random(self.seed + self.epoch)
        self.epoch += 1
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        size = self.batch_size * self.mega
        batches = []
        for start in range(0, len(order), size):
            chunk = sorted(order[start : start + size], key=lambda i: -self.lengths[i])
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        longest = max(range(len(batches)), key=lambda b: self.lengths[batches[b][0]]) if batches else 0
        first = batches.pop(longest) if batches else []
        rng.shuffle(batches)
        for batch in [first, *batches]:
            yield from batch


def environment_seed() -> int:
    return int(os.environ.get("PL_GLOBAL_SEED", "0"))
