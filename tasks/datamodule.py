"""The LightningDataModule every task builds on: read -> featurise (cached) -> loaders -> Evaluation.

The subclass reads its files and says how to featurise them (``prepare``); this class owns the
tokenizer, the feature cache (``feature_cache``), batching (``batching``), the loaders of every
stage and the evaluations handed to the module.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import lightning as L
from torch.utils.data import DataLoader

from .batching import IGNORE_INDEX as IGNORE_INDEX  # the padding label, imported from here too
from .batching import Batching, Collate, collate, token_budget_applies
from .checkpoint import DATA_SETTINGS_KEY, load_task_tokenizer
from .evaluation import Evaluation
from .feature_cache import FeatureCache, InputLengthReport
from .hub import find_split, load_hub_dataset
from .io import UserError, check_output_paths
from .options import check_at_least as check_at_least  # subclasses check their options with it
from .outputs import predictions_path


class TaskDataModule(L.LightningDataModule):
    """Owns the files, the tokenizer (same source as the model) and batching.

    Args:
        train_file, validation_file, test_file, predict_file: local files, read by the task's reader.
        predictions_file: where ``predict`` writes (default: ``predictions.jsonl`` in ``<run>/predict/<input stem>/``).
        batch_size: training batch size.
        eval_batch_size: fixed-size evaluation and predict batches, in file order. By default they
            are sized by tokens instead (``eval_tokens_per_batch``).
        eval_tokens_per_batch: evaluation and predict batches hold inputs of similar length, longest
            first, up to this many (padded) tokens; outputs are written in input order all the same.
        max_seq_length: longest tokenised input, special tokens included.
        tokenizer: the tokenizer's source; linked from ``model.pretrained`` (never set it by hand).
        do_lower_case: force the casing; by default it is read from the checkpoint.
        num_workers: DataLoader workers.
        group_by_length: batch training examples of similar length (less padding, faster).
        dataset, dataset_config: a Hugging Face Hub data set instead of local files (needs network).
        cache_dir: where tokenised features are cached (default: the ``datasets`` cache).
    """

    # Settings that shape the features and the decoding: stored in every checkpoint, so that the
    # checkpoint alone validates and predicts as the run did (the CLI hands them back).
    stored_settings: tuple[str, ...] = ("max_seq_length",)
    # Functions of the ``features`` modules the subclass featurises with (their modules' source is
    # part of the feature cache key).
    feature_functions: tuple[Callable, ...] = ()
    # What the module is told (linked at instantiation): decided once, in the subclass's __init__.
    task: str | None = None
    label_names: list[str] | None = None
    # What becomes of an input longer than max_seq_length (the input-length report says it).
    long_inputs = "were truncated"

    def __init__(
        self,
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
        predict_file: str | None = None,
        predictions_file: str | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        eval_tokens_per_batch: int = 4096,
        max_seq_length: int = 128,
        tokenizer: str | None = None,
        do_lower_case: bool | None = None,
        num_workers: int = 0,
        group_by_length: bool = False,
        dataset: str | None = None,
        dataset_config: str | None = None,
        cache_dir: str | None = None,
    ):
        super().__init__()
        self.batching = Batching(
            batch_size, eval_batch_size, eval_tokens_per_batch, num_workers, group_by_length
        )
        # [CLS] + a token + [SEP]; a pair needs [SEP] twice (checked where pairs are known)
        check_at_least("max_seq_length", max_seq_length, 3, "room for a token besides [CLS] and [SEP]")
        self.train_file, self.validation_file, self.test_file = train_file, validation_file, test_file
        self.predict_file, self.predictions_file = predict_file, predictions_file
        self.batch_size = batch_size  # an attribute of its own: Lightning's batch-size finder sets it
        self._max_seq_length = max_seq_length
        self.tokenizer_source, self.do_lower_case = tokenizer, do_lower_case
        self.dataset, self.dataset_config, self.cache_dir = dataset, dataset_config, cache_dir
        self._tokenizer, self._hub = None, None
        self.prepared: dict[str, list[Prepared]] = {}
        # (epoch, batches already trained in it): set when a run resumes from a mid-epoch checkpoint.
        self.resume_position: tuple[int, int] | None = None
        self.lengths = InputLengthReport(self.long_inputs)  # inputs longer than max_seq_length, per file

    def use_tokenizer(self, tokenizer) -> None:
        """The tokenizer of the model's own source, handed over by the app (which opened it once)."""
        if self._max_seq_length > (limit := tokenizer.model_max_length):
            message = f"max_seq_length {self._max_seq_length} exceeds the encoder's {limit} positions"
            warnings.warn(f"{message}; using {limit}", stacklevel=2)
        self._tokenizer = tokenizer

    @property
    def tokenizer(self):
        if self._tokenizer is None:  # a data module built on its own (a script, a test) opens its source
            if self.tokenizer_source is None:
                raise UserError("no tokenizer source: set --model.pretrained (the data module follows it)")
            self.use_tokenizer(load_task_tokenizer(self.tokenizer_source, do_lower_case=self.do_lower_case))
        return self._tokenizer

    @property
    def max_seq_length(self) -> int:
        """The requested max_seq_length, capped at the encoder's number of positions."""
        return min(self._max_seq_length, self.tokenizer.model_max_length)

    # -- read: files, hub data sets ------------------------------------------------------------

    def split_file(self, split: str) -> str | None:
        files = {"train": self.train_file, "validation": self.validation_file, "test": self.test_file}
        return {**files, "predict": self.predict_file}[split]

    def has_split(self, split: str) -> bool:
        """A file is set for the split, or the hub data set has it."""
        return self.split_file(split) is not None or self.hub_split(split) is not None

    def hub_split(self, split: str) -> datasets.Dataset | None:
        """A split of ``--data.dataset`` from the Hugging Face Hub (None when no data set is named)."""
        if self.dataset is None:
            return None
        self._hub = self._hub or load_hub_dataset(self.dataset, self.dataset_config)
        return find_split(self._hub, split)

    def prepare(self, split: str) -> list[Prepared]:
        """Read and featurise a split: one ``Prepared`` per loader (MNLI validates on two files)."""
        raise NotImplementedError

    # -- featurise: one path, written to the cache in chunks, memory-mapped after -----------------
    # (``feature_cache.examples`` for examples in memory, ``feature_cache.stream`` for a file read lazily)

    @property
    def feature_cache(self) -> FeatureCache:
        """Features of this tokenizer and max_seq_length, cached by the featurising functions' source."""
        owner, functions = type(self).__name__, self.feature_functions
        sizes = (self.tokenizer, self.max_seq_length, functions)
        return FeatureCache(self.cache_dir, owner, *sizes, report=self.lengths.note)

    # -- loaders -------------------------------------------------------------------------------

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad list columns to the longest in the batch (rounded up to a multiple of 8); tensorise."""
        return collate(features, self.tokenizer.pad_token_id)

    def make_loader(
        self, dataset, shuffle: bool, batch_size: int | None = None, collate_fn: Collate | None = None
    ) -> DataLoader:
        collate_fn = collate_fn or self.collate
        if shuffle:
            resume, self.resume_position = self.resume_position, None  # once: later epochs start whole
            return self.batching.training_loader(dataset, collate_fn, batch_size or self.batch_size, resume)
        token_budget = self._token_budget_batches(dataset)
        return self.batching.evaluation_loader(dataset, collate_fn, token_budget, batch_size)

    def _token_budget_batches(self, dataset) -> bool:
        return self.batching.eval_batch_size is None and token_budget_applies(self.trainer, dataset)

    def setup(self, stage: str) -> None:
        inputs = [self.predict_file, self.tokenizer_source]  # predict reads them: never overwritten
        if stage == "predict":  # before the work, not after it
            check_output_paths([self.predictions_path()], inputs)
        for split in STAGE_SPLITS[stage]:
            if split == "validation" and not self.has_split(split):
                if stage == "fit":
                    continue  # fit without a dev set: train only
                # validate with nothing to validate would write a record of no scores
                raise UserError("no validation data: set --data.validation_file")
            if split not in self.prepared:
                self.prepared[split] = self.prepare(split)
                self.lengths.gather(split, [p.evaluation for p in self.prepared[split]])
        if stage == "predict":
            outputs = [output.path for p in self.prepared["predict"] for output in p.evaluation.outputs]
            check_output_paths(outputs, inputs)

    def train_dataloader(self) -> DataLoader:
        return self.make_loader(self.prepared["train"][0].dataset, shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self.make_loader(p.dataset, shuffle=False) for p in self.prepared.get("validation", [])]

    def test_dataloader(self) -> list[DataLoader]:
        return [self.make_loader(p.dataset, shuffle=False) for p in self.prepared["test"]]

    def predict_dataloader(self) -> DataLoader:
        return self.make_loader(self.prepared["predict"][0].dataset, shuffle=False)

    # -- hand over: evaluations, outputs, stored settings --------------------------------------

    def evaluations(self) -> dict[str, list[Evaluation]]:
        """What the module needs to decode, score and write each prepared split."""
        return {split: [p.evaluation for p in prepared] for split, prepared in self.prepared.items()}

    @property
    def run_dir(self) -> Path:
        return Path(self.trainer.default_root_dir) if self.trainer is not None else Path("outputs")

    def predictions_path(self, default_name: str = "predictions.jsonl") -> Path:
        """``--data.predictions_file``, else ``default_name`` in the command's folder."""
        return predictions_path(self.predictions_file, self.run_dir, default_name)

    def input_lengths(self) -> dict[str, dict[str, Any]]:
        """metrics.json's ``input_lengths``: per prepared split, its inputs longer than max_seq_length."""
        return self.lengths.by_split

    def state_dict(self) -> dict[str, Any]:
        """Saved by Lightning in every checkpoint (see ``stored_settings``); nothing is loaded
        back from it here: the CLI applies the stored settings before the data module is built."""
        names = self.stored_settings
        return {DATA_SETTINGS_KEY: {n: getattr(self, f"_{n}", getattr(self, n, None)) for n in names}}

    def resume_training_at(self, epoch: int, batches_done: int) -> None:
        """A run resumed mid-epoch: the next training loader starts in ``epoch`` after its first
        ``batches_done`` batches."""
        self.resume_position = (epoch, batches_done)


@dataclass
class Prepared:
    """A featurised split: the loader's rows and what the module needs to evaluate them."""

    dataset: datasets.Dataset
    evaluation: Evaluation


STAGE_SPLITS = {
    "fit": ("train", "validation"),
    "validate": ("validation",),
    "test": ("test",),
    "predict": ("predict",),
}
