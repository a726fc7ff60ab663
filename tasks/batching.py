"""From features to batches: padding (collate), and which sampler orders a loader's rows.

Training batches come in a seeded order (``sampling``); evaluation and predict batches are sized
by tokens (inputs of similar length together, longest first) where that is safe, by rows
otherwise. No Lightning here: the trainer is read as a plain object.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader

from .options import check_at_least
from .sampling import EpochSampler, LengthGroupedSampler, TokenBudgetBatchSampler, environment_seed

if TYPE_CHECKING:  # the plain predictor pads with ``collate`` and never imports datasets
    import datasets

# Padding value per column; list-valued columns not named here (e.g. token labels) pad with -100,
# the value cross-entropy ignores.
PAD_VALUES = {"token_type_ids": 0, "attention_mask": 0}
IGNORE_INDEX = -100

Collate = Callable[[list[dict[str, Any]]], dict[str, Any]]


@dataclass(frozen=True)
class Batching:
    """The loader options of ``--data`` (see ``TaskDataModule``), checked once, and the loaders
    they make: training batches in a seeded order, evaluation batches by tokens or by rows."""

    batch_size: int = 32
    eval_batch_size: int | None = None  # set: fixed-size evaluation batches, not token budgets
    eval_tokens_per_batch: int = 4096
    num_workers: int = 0
    group_by_length: bool = False

    def __post_init__(self) -> None:
        check_at_least("batch_size", self.batch_size, 1)
        if self.eval_batch_size is not None:
            check_at_least("eval_batch_size", self.eval_batch_size, 1)
        check_at_least("eval_tokens_per_batch", self.eval_tokens_per_batch, 8)
        check_at_least("num_workers", self.num_workers, 0)

    def training_loader(
        self, dataset: datasets.Dataset, collate_fn: Collate, batch_size: int, resume: tuple[int, int] | None
    ) -> DataLoader:
        """Shuffled batches; ``resume``: (epoch, batches done) of a run resumed mid-epoch."""
        sampler = training_sampler(dataset, batch_size, self.group_by_length, resume)
        return fixed_size_loader(dataset, batch_size, collate_fn, self.num_workers, sampler)

    def evaluation_loader(
        self,
        dataset: datasets.Dataset,
        collate_fn: Collate,
        token_budget: bool,
        batch_size: int | None = None,
    ) -> DataLoader:
        """Batches by tokens with ``token_budget`` (and no ``eval_batch_size``), else by rows in
        file order (``batch_size``, by default ``eval_batch_size`` or twice the training one)."""
        if token_budget and batch_size is None and self.eval_batch_size is None:
            return token_budget_loader(dataset, self.eval_tokens_per_batch, collate_fn, self.num_workers)
        batch_size = batch_size or self.eval_batch_size or 2 * self.batch_size
        return fixed_size_loader(dataset, batch_size, collate_fn, self.num_workers)


def collate(features: list[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Pad list columns to the longest in the batch (rounded up to a multiple of 8); tensorise."""
    batch: dict[str, Any] = {}
    for key in features[0]:
        values = [f[key] for f in features]
        if isinstance(values[0], list | tuple) and (
            not values[0] or not isinstance(values[0][0], list | str)
        ):
            pad = pad_token_id if key == "input_ids" else PAD_VALUES.get(key, IGNORE_INDEX)
            length = max(8, 8 * math.ceil(max(len(v) for v in values) / 8))
            dtype = torch.float if values[0] and isinstance(values[0][0], float) else torch.long
            batch[key] = torch.tensor([list(v) + [pad] * (length - len(v)) for v in values], dtype=dtype)
        elif isinstance(values[0], bool | int | float):
            batch[key] = torch.tensor(values)
        else:
            batch[key] = values  # strings, nested lists: passed through for post-processing
    return batch


def token_lengths(dataset: datasets.Dataset) -> list[int]:
    """Each row's number of tokens, read from the Arrow column (not by loading the rows)."""
    if getattr(dataset, "_indices", None) is None:
        import pyarrow.compute

        return pyarrow.compute.list_value_length(dataset.data.column("input_ids")).to_pylist()
    return [len(ids) for ids in dataset["input_ids"]]


def token_budget_applies(trainer: Any, dataset: datasets.Dataset) -> bool:
    """Whether evaluation batches may be sized by tokens: on one process (with several,
    Lightning's distributed sampler splits fixed-size batches between the ranks), over the whole
    split, for rows that have tokens."""
    world_size = trainer.world_size if trainer is not None else 1
    # A run that evaluates only its first batches (--trainer.limit_val_batches 2, the way people
    # try things) wants the first examples whole, not the longest windows of many: file order.
    limits = (
        [
            getattr(trainer, name, 1.0)
            for name in ("limit_val_batches", "limit_test_batches", "limit_predict_batches")
        ]
        if trainer is not None
        else []
    )
    # a whole number counts batches (1 is one batch); a float is a share (1.0 is all)
    limited = any(isinstance(v, int) or (isinstance(v, float) and v < 1.0) for v in limits)
    return world_size == 1 and not limited and "input_ids" in dataset.column_names


def training_sampler(
    dataset: datasets.Dataset,
    batch_size: int,
    group_by_length: bool,
    resume_position: tuple[int, int] | None,
) -> EpochSampler:
    """The training order: a function of the seed and the epoch only (not of the global random
    state that dropout draws from), so that a resumed run sees the batches it would have."""
    if group_by_length and "input_ids" in dataset.column_names:
        lengths = [len(ids) for ids in dataset["input_ids"]]
        sampler: EpochSampler = LengthGroupedSampler(lengths, batch_size, seed=environment_seed())
    else:
        sampler = EpochSampler(len(dataset), batch_size, seed=environment_seed())
    if resume_position is not None:
        sampler.resume(*resume_position)
    return sampler


def token_budget_loader(
    dataset: datasets.Dataset, tokens_per_batch: int, collate_fn: Collate, num_workers: int
) -> DataLoader:
    """Batches of similar lengths, longest first, up to ``tokens_per_batch`` padded tokens."""
    return DataLoader(
        dataset,
        batch_sampler=TokenBudgetBatchSampler(token_lengths(dataset), tokens_per_batch),
        collate_fn=collate_fn,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def fixed_size_loader(
    dataset: datasets.Dataset,
    batch_size: int,
    collate_fn: Collate,
    num_workers: int,
    sampler: EpochSampler | None = None,
) -> DataLoader:
    """Batches of ``batch_size`` rows, in ``sampler``'s order (file order without one)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        # Worker seeds from a generator of the loader's own, not from the global random state.
        generator=torch.Generator().manual_seed(environment_seed()),
    )
