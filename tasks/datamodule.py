"""The LightningDataModule every task builds on: files, tokenizer, cached features, dynamic padding."""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import json
import math
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import lightning as L
import numpy as np
import pyarrow.compute
import torch
from datasets.arrow_writer import ArrowWriter
from torch.utils.data import DataLoader

from .checkpoint import DATA_SETTINGS_KEY, load_task_tokenizer
from .evaluation import Evaluation
from .io import UserError, check_output_paths
from .sampling import EpochSampler, LengthGroupedSampler, TokenBudgetBatchSampler, environment_seed

# Padding value per column; list-valued columns not named here (e.g. token labels) pad with -100,
# the value cross-entropy ignores.
PAD_VALUES = {"token_type_ids": 0, "attention_mask": 0}
IGNORE_INDEX = -100


class TaskDataModule(L.LightningDataModule):
    """Owns the files, the tokenizer (same source as the model) and batching.

    Args:
        train_file, validation_file, test_file, predict_file: local files, read by the task's reader.
        predictions_file: where ``predict`` writes (default: ``<run dir>/predictions.jsonl``).
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
        check_at_least("batch_size", batch_size, 1)
        if eval_batch_size is not None:
            check_at_least("eval_batch_size", eval_batch_size, 1)
        check_at_least("eval_tokens_per_batch", eval_tokens_per_batch, 8)
        check_at_least("num_workers", num_workers, 0)
        # [CLS] + a token + [SEP]; a pair needs [SEP] twice (checked where pairs are known)
        check_at_least("max_seq_length", max_seq_length, 3, "room for a token besides [CLS] and [SEP]")
        self.train_file, self.validation_file, self.test_file = train_file, validation_file, test_file
        self.predict_file, self.predictions_file = predict_file, predictions_file
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or 2 * batch_size
        # Token-budget batches unless a fixed evaluation batch size is asked for.
        self.eval_tokens_per_batch = None if eval_batch_size is not None else eval_tokens_per_batch
        self._max_seq_length = max_seq_length
        self.tokenizer_source = tokenizer
        self.do_lower_case = do_lower_case
        self.num_workers = num_workers
        self.group_by_length = group_by_length
        self.dataset, self.dataset_config = dataset, dataset_config
        self.cache_dir = cache_dir
        self._tokenizer = None
        self._hub: datasets.DatasetDict | None = None
        self.prepared: dict[str, list[Prepared]] = {}
        # (epoch, batches already trained in it): set when a run resumes from a mid-epoch checkpoint.
        self.resume_position: tuple[int, int] | None = None

    # -- tokenizer ---------------------------------------------------------------------------

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            if self.tokenizer_source is None:
                raise UserError("no tokenizer source: set --model.pretrained (the data module follows it)")
            self._tokenizer = load_task_tokenizer(self.tokenizer_source, do_lower_case=self.do_lower_case)
            limit = self._tokenizer.model_max_length
            if self._max_seq_length > limit:
                warnings.warn(
                    f"max_seq_length {self._max_seq_length} exceeds the encoder's {limit} positions; "
                    f"using {limit}",
                    stacklevel=2,
                )
        return self._tokenizer

    @property
    def max_seq_length(self) -> int:
        """The requested max_seq_length, capped at the encoder's number of positions."""
        return min(self._max_seq_length, self.tokenizer.model_max_length)

    # -- files and hub data sets --------------------------------------------------------------

    def split_file(self, split: str) -> str | None:
        return {
            "train": self.train_file,
            "validation": self.validation_file,
            "test": self.test_file,
            "predict": self.predict_file,
        }[split]

    def state_dict(self) -> dict[str, Any]:
        """Saved by Lightning in every checkpoint (see ``stored_settings``)."""
        settings = {
            name: getattr(self, f"_{name}", getattr(self, name, None)) for name in self.stored_settings
        }
        return {DATA_SETTINGS_KEY: settings}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass  # the CLI applies the stored settings before the data module is built

    def resume_training_at(self, epoch: int, batches_done: int) -> None:
        """A run resumed from a mid-epoch checkpoint: the next training loader starts in ``epoch``
        after its first ``batches_done`` batches."""
        self.resume_position = (epoch, batches_done)

    def has_split(self, split: str) -> bool:
        """A file is set for the split, or the hub data set has it."""
        return self.split_file(split) is not None or (
            self.dataset is not None and self.hub_split(split) is not None
        )

    def hub_split(self, split: str) -> datasets.Dataset | None:
        """A split of ``--data.dataset`` from the Hugging Face Hub (None when no data set is named)."""
        if self.dataset is None:
            return None
        if self._hub is None:
            try:
                self._hub = datasets.load_dataset(self.dataset, self.dataset_config)
            except Exception as err:
                raise UserError(
                    f"could not load data set '{self.dataset}'"
                    f"{f' ({self.dataset_config})' if self.dataset_config else ''} from the Hugging Face Hub "
                    f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). Offline? Pass "
                    "local files with --data.train_file / --data.validation_file / --data.test_file."
                ) from None
        names = {"validation": ("validation", "validation_matched", "dev")}.get(split, (split,))
        for name in names:
            if name in self._hub:
                return self._hub[name]
        return None

    # -- features ----------------------------------------------------------------------------

    def featurize(
        self,
        split: str,
        examples: list[dict[str, Any]],
        fn: Callable[[dict[str, list]], dict[str, list]],
        settings: dict[str, Any],
    ) -> datasets.Dataset:
        """Run ``fn`` (a batched ``Dataset.map`` function, may emit several features per example)
        over ``examples``, cached on disk under a fingerprint of the examples, tokenizer and settings."""
        table = datasets.Dataset.from_list(examples) if examples else datasets.Dataset.from_dict({})
        if not examples:
            return table
        digest = hashlib.sha256(json.dumps(examples, sort_keys=True, default=str).encode()).hexdigest()
        features = table.map(
            fn,
            batched=True,
            remove_columns=table.column_names,
            cache_file_name=str(self._cache_file(split, {"examples": digest}, fn, settings)),
            load_from_cache_file=True,
            desc=f"tokenising {split}",
        )
        # Each feature's row number: outputs are collected by it (a repeat counts once).
        return features.add_column("feature_index", np.arange(len(features), dtype=np.int64))

    def featurize_stream(
        self,
        split: str,
        source: str | Path,
        rows: Callable[[], Iterable[dict[str, Any] | None]],
        fn: Callable[[dict[str, list]], dict[str, list]],
        settings: dict[str, Any],
        chunk_size: int = 1000,
    ) -> tuple[datasets.Dataset, int]:
        """``featurize`` for an input read lazily from the file ``source``: no list of examples, no
        in-memory table. ``rows()`` yields one item per example, in order: the row ``fn`` sees (its
        ``example`` field is set to the example's number), or None for an example without features
        (an empty line). Chunks of ``chunk_size`` rows are featurised and written to the Arrow cache
        file as they come, which is then memory-mapped; the cache key is the file's bytes (with the
        tokenizer, settings and code). Returns the features and the number of examples."""
        cache_file = self._cache_file(split, {"source": file_digest(source)}, fn, settings)
        count_file = cache_file.with_suffix(".json")
        if count_file.is_file():
            counts = json.loads(count_file.read_text())
            if not counts["features"] or cache_file.is_file():
                return _load_features(cache_file, counts["features"]), counts["examples"]
        tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
        writer = ArrowWriter(path=str(tmp))
        num_examples = num_features = 0
        chunk: list[dict[str, Any]] = []

        def flush() -> None:
            nonlocal num_features
            batch = {key: [row[key] for row in chunk] for key in chunk[0]}
            features = fn(batch)
            size = len(next(iter(features.values()))) if features else 0
            if size:
                features["feature_index"] = list(range(num_features, num_features + size))
                writer.write_batch(features)
                num_features += size
            chunk.clear()

        try:
            for row in rows():
                if row is not None:
                    chunk.append({**row, "example": num_examples})
                    if len(chunk) >= chunk_size:
                        flush()
                num_examples += 1
            if chunk:
                flush()
            if num_features:
                writer.finalize()
                os.replace(tmp, cache_file)
            else:
                writer.stream.close()
        finally:
            if tmp.exists():
                tmp.unlink()
        count_file.write_text(json.dumps({"examples": num_examples, "features": num_features}) + "\n")
        return _load_features(cache_file, num_features), num_examples

    def _cache_file(self, split: str, data: dict[str, str], fn: Callable, settings: dict[str, Any]) -> Path:
        """The feature cache file of ``split``: a fingerprint of the data, the tokenizer, the
        settings, the featurisation code and the libraries' versions."""
        key = json.dumps(
            {
                "settings": settings,
                **data,
                # vocabulary, casing, accent stripping, Chinese-character splitting: all of the tokenizer
                "tokenizer": hashlib.sha256(self.tokenizer.backend_tokenizer.to_str().encode()).hexdigest(),
                "max_seq_length": self.max_seq_length,
                "code": self.feature_code_digest(fn),
                "versions": {
                    name: importlib.metadata.version(name)
                    for name in ("tokenizers", "transformers", "datasets")
                },
            },
            sort_keys=True,
            default=str,
        )
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        cache_root = Path(self.cache_dir or Path(datasets.config.HF_DATASETS_CACHE) / "bert_tasks")
        cache_root.mkdir(parents=True, exist_ok=True)
        return cache_root / f"{type(self).__name__}-{split}-{digest}.arrow"

    def feature_code_digest(self, fn: Callable) -> str:
        """A digest of the whole source of the modules that featurise: ``fn``'s module (the task's
        data module) and the ``features`` module it calls. A change to any helper there must not
        reuse features cached by the old code."""
        modules = {inspect.getmodule(fn), *(inspect.getmodule(f) for f in self.feature_functions)}
        sources = sorted(inspect.getsource(module) for module in modules if module is not None)
        return hashlib.sha256("\n".join(sources).encode()).hexdigest()

    # -- batching ----------------------------------------------------------------------------

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad list columns to the longest in the batch (rounded up to a multiple of 8); tensorise."""
        batch: dict[str, Any] = {}
        for key in features[0]:
            values = [f[key] for f in features]
            if isinstance(values[0], list | tuple) and (
                not values[0] or not isinstance(values[0][0], list | str)
            ):
                pad = self.tokenizer.pad_token_id if key == "input_ids" else PAD_VALUES.get(key, IGNORE_INDEX)
                length = max(8, 8 * math.ceil(max(len(v) for v in values) / 8))
                dtype = torch.float if values[0] and isinstance(values[0][0], float) else torch.long
                batch[key] = torch.tensor([list(v) + [pad] * (length - len(v)) for v in values], dtype=dtype)
            elif isinstance(values[0], bool | int | float):
                batch[key] = torch.tensor(values)
            else:
                batch[key] = values  # strings, nested lists: passed through for post-processing
        return batch

    def make_loader(
        self,
        dataset,
        shuffle: bool,
        batch_size: int | None = None,
        collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
    ) -> DataLoader:
        collate_fn = collate_fn or self.collate
        if not shuffle and batch_size is None and self._token_budget_batches(dataset):
            return DataLoader(
                dataset,
                batch_sampler=TokenBudgetBatchSampler(_lengths(dataset), self.eval_tokens_per_batch),
                collate_fn=collate_fn,
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
            )
        batch_size = batch_size or (self.batch_size if shuffle else self.eval_batch_size)
        sampler = None
        if shuffle:
            # The training order depends on the seed and the epoch only (not on the global random
            # state that dropout draws from), so that a resumed run sees the batches it would have.
            if self.group_by_length and "input_ids" in dataset.column_names:
                lengths = [len(ids) for ids in dataset["input_ids"]]
                sampler = LengthGroupedSampler(lengths, batch_size, seed=environment_seed())
            else:
                sampler = EpochSampler(len(dataset), batch_size, seed=environment_seed())
            if self.resume_position is not None:
                sampler.resume(*self.resume_position)
                self.resume_position = None
            shuffle = False
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            collate_fn=collate_fn,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            # Worker seeds from a generator of the loader's own, not from the global random state.
            generator=torch.Generator().manual_seed(environment_seed()),
        )

    def _token_budget_batches(self, dataset) -> bool:
        """Token-budget batches on one process (with several, Lightning's distributed sampler
        splits fixed-size batches between the ranks)."""
        trainer = self.trainer
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
        return (
            bool(self.eval_tokens_per_batch)
            and world_size == 1
            and not limited
            and "input_ids" in dataset.column_names
        )

    # -- splits, loaders and evaluations: written once for every task --------------------------

    def prepare(self, split: str) -> list[Prepared]:
        """Read and featurise a split: one ``Prepared`` per loader (MNLI validates on two files)."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        if stage == "predict":  # before the work, not after it
            check_output_paths([self.predictions_path()], self._inputs())
        for split in STAGE_SPLITS[stage]:
            if split == "validation" and not self.has_split(split):
                continue  # fit without a dev set: train only
            if split not in self.prepared:
                self.prepared[split] = self.prepare(split)
        if stage == "predict":
            outputs = [output.path for p in self.prepared["predict"] for output in p.evaluation.outputs]
            check_output_paths(outputs, self._inputs())

    def _inputs(self) -> list:
        """What predict reads: the file, and the model source (a checkpoint, an export directory)."""
        return [self.predict_file, self.tokenizer_source]

    def evaluations(self) -> dict[str, list[Evaluation]]:
        """What the module needs to decode, score and write each prepared split."""
        return {split: [p.evaluation for p in prepared] for split, prepared in self.prepared.items()}

    def train_dataloader(self) -> DataLoader:
        return self.make_loader(self.prepared["train"][0].dataset, shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self.make_loader(p.dataset, shuffle=False) for p in self.prepared.get("validation", [])]

    def test_dataloader(self) -> list[DataLoader]:
        return [self.make_loader(p.dataset, shuffle=False) for p in self.prepared["test"]]

    def predict_dataloader(self) -> DataLoader:
        return self.make_loader(self.prepared["predict"][0].dataset, shuffle=False)

    # -- outputs -------------------------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        return Path(self.trainer.default_root_dir) if self.trainer is not None else Path("outputs")

    def predictions_path(self, default_name: str = "predictions.jsonl") -> Path:
        return Path(self.predictions_file) if self.predictions_file else self.run_dir / default_name


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


def _lengths(dataset: datasets.Dataset) -> list[int]:
    """Each row's number of tokens, read from the Arrow column (not by loading the rows)."""
    if getattr(dataset, "_indices", None) is None:
        return pyarrow.compute.list_value_length(dataset.data.column("input_ids")).to_pylist()
    return [len(ids) for ids in dataset["input_ids"]]


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _load_features(cache_file: Path, num_features: int) -> datasets.Dataset:
    """The memory-mapped features of ``featurize_stream`` (an empty table when there are none)."""
    if not num_features:
        return datasets.Dataset.from_dict({})
    return datasets.Dataset.from_file(str(cache_file))


def check_at_least(name: str, value: float, least: float, why: str = "") -> None:
    """A UserError naming the option when ``value`` is below ``least``."""
    if value < least:
        reason = f" ({why})" if why else ""
        raise UserError(f"--data.{name} must be at least {least}{reason}, not {value}")
