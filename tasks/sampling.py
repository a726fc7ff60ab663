"""Training order: a function of (seed, epoch) only, so that a resumed run sees the same batches.

Both samplers take the epoch from Lightning (``set_epoch``), never from a global random state, and
can start part-way through an epoch (``resume``), which is how a run killed mid-epoch continues.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """A shuffled order of ``num_items``, from ``seed + epoch`` alone."""

    def __init__(self, num_items: int, batch_size: int, seed: int = 0):
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.epoch, self.skip_batches = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, batches_done: int) -> None:
        """The next iteration is epoch ``epoch`` without its first ``batches_done`` batches."""
        self.epoch, self.skip_batches = epoch, batches_done

    def __len__(self) -> int:
        return self.num_items

    def order(self) -> list[int]:
        order = list(range(self.num_items))
        random.Random(self.seed + self.epoch).shuffle(order)
        return order

    def __iter__(self) -> Iterator[int]:
        skip, self.skip_batches = self.skip_batches * self.batch_size, 0
        yield from self.order()[skip:]


class LengthGroupedSampler(EpochSampler):
    """Shuffled order in which neighbours have similar lengths: shuffle, cut into mega-batches of
    50 batches, sort each by length, then shuffle the batches (the longest batch goes first so an
    out-of-memory error shows up at once)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, mega_batch: int = 50, seed: int = 0):
        super().__init__(len(lengths), batch_size, seed)
        self.lengths, self.mega = list(lengths), mega_batch

    def order(self) -> list[int]:
        rng = random.Random(self.seed + self.epoch)
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
        return [index for batch in [first, *batches] for index in batch]


def environment_seed() -> int:
    return int(os.environ.get("PL_GLOBAL_SEED", "0"))
