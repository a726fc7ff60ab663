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


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Evaluation and predict batches sized by tokens, not rows: within each chunk of ``chunk``
    consecutive items (so that decoding in input order buffers at most a chunk), items go longest
    first into batches whose padded size (rows x longest, rounded up to 8 as collate pads) stays
    within ``max_tokens``. Short inputs then run many to a batch, long ones few, with little padding."""

    def __init__(self, lengths: Sequence[int], max_tokens: int, chunk: int = 4096, max_rows: int = 1024):
        self.batches: list[list[int]] = []
        for start in range(0, len(lengths), chunk):
            part = list(range(start, min(start + chunk, len(lengths))))
            part.sort(key=lambda i: -lengths[i])
            batch: list[int] = []
            for i in part:
                longest = -(-max(lengths[batch[0]] if batch else 0, lengths[i], 1) // 8) * 8
                if batch and ((len(batch) + 1) * longest > max_tokens or len(batch) >= max_rows):
                    self.batches.append(batch)
                    batch = []
                batch.append(i)
            if batch:
                self.batches.append(batch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)


def environment_seed() -> int:
    return int(os.environ.get("PL_GLOBAL_SEED", "0"))
