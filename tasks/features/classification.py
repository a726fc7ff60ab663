"""Sentence classification features: a text (or a pair) -> ``[CLS] a [SEP] (b [SEP])``; pure, no Lightning.

One ``SentenceFeatures`` value holds every setting that shapes the features; its fields are the
feature cache key, so changing any of them makes the features again, and nothing else does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..data.glue import GLUE_TASKS
from ..data.tables import Example
from ..feature_cache import INPUT_LENGTHS
from ..io import UserError

GENERIC_TASKS = ("classification", "regression", "multilabel")


def normalise_task(task: str) -> str:
    """``SST-2`` -> ``sst2``; an unknown name is an error listing the known ones."""
    name = str(task).lower().replace("-", "").replace("_", "")
    if name not in GLUE_TASKS and name not in GENERIC_TASKS:
        raise UserError(
            f"unknown task {task!r}; choose a GLUE task ({', '.join(GLUE_TASKS)}) "
            f"or one of {', '.join(GENERIC_TASKS)}"
        )
    return name


def is_regression(task: str | None) -> bool:
    return task in ("stsb", "regression")


def whole_lengths(tokenizer: Any, texts: list, pairs: list | None = None, **options: Any) -> list[int]:
    """The length in tokens of each input (a text, or a pair), special tokens included, as it would
    be without truncation: what the input-length report compares with max_seq_length."""
    plain = {"add_special_tokens": False, "return_attention_mask": False, "return_token_type_ids": False}
    encoded = tokenizer(texts, pairs, **plain, verbose=False, **options)["input_ids"]
    special = tokenizer.num_special_tokens_to_add(pair=pairs is not None)
    return [len(ids) + special for ids in encoded]


def is_multilabel(task: str | None) -> bool:
    """Several labels per example (a sigmoid per label), not one of them (a softmax)."""
    return task == "multilabel"


@dataclass(frozen=True)
class SentenceFeatures:
    """How the examples of a classification or regression task become model inputs.

    Args:
        task: a normalised task name (see ``normalise_task``).
        label_names: the labels in id order (the gold label is its name's position); None for regression.
        pair: whether every example is a sentence pair (truncated longest-first to fit).
        max_seq_length: the longest input, special tokens included (already capped at the encoder's
            positions when the features are made).
    """

    task: str
    label_names: Sequence[str] | None
    pair: bool
    max_seq_length: int

    def __post_init__(self) -> None:
        normalise_task(self.task)
        if self.label_names is not None:  # a list from the command line or a file: the key is a tuple
            object.__setattr__(self, "label_names", tuple(self.label_names))
        if is_regression(self.task) != (self.label_names is None):
            raise UserError(f"task {self.task!r} takes label names only when it is not a regression")
        if self.label_names is not None:
            if not self.label_names:
                raise UserError(f"task {self.task!r} needs at least one label")
            # A repeated name would make two ids of one label: ``index`` would find only the first.
            repeated = sorted({name for name in self.label_names if self.label_names.count(name) > 1})
            if repeated:
                raise UserError(f"--data.labels names {', '.join(map(repr, repeated))} more than once")
        spec = GLUE_TASKS.get(self.task)
        if spec is not None and spec.is_pair != self.pair:
            raise UserError(f"GLUE task {self.task!r} takes {'pairs' if spec.is_pair else 'single texts'}")
        least, why = (
            (5, "a token of each text, [CLS] and two [SEP]") if self.pair else (3, "a token, [CLS] and [SEP]")
        )
        if self.max_seq_length < least:
            raise UserError(
                f"--data.max_seq_length must be at least {least} ({why}), not {self.max_seq_length}"
            )

    def cache_key(self) -> dict[str, Any]:
        """What the cached features depend on besides the examples, the tokenizer and the code."""
        return asdict(self)

    def gold(self, example: Example) -> int | float | list[float] | None:
        """The label id (the score for regression; for multi-label, 1.0 at each of the example's
        label ids and 0.0 elsewhere) the loss and the scorer compare with."""
        if example.label is None:
            return None
        if self.label_names is None:
            return float(example.label)
        if is_multilabel(self.task):
            names = set(example.label)
            return [1.0 if name in names else 0.0 for name in self.label_names]
        return self.label_names.index(str(example.label))

    def row(self, example: Example) -> dict[str, Any]:
        """The example as the tokenising function reads it (a single text has an empty pair)."""
        return {"text": example.text, "text_pair": example.text_pair or "", "label": self.gold(example)}

    def rows(self, examples: Sequence[Example]) -> list[dict[str, Any]]:
        """``row`` of each example, numbered: the number says which example a feature answers."""
        return [{**self.row(example), "example": i} for i, example in enumerate(examples)]

    def tokenizing(self, tokenizer: Any) -> Callable[[dict[str, list]], dict[str, list]]:
        """A batched function, rows -> features (one per row), for ``Dataset.map`` or a stream's chunks."""

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            pairs = batch["text_pair"] if self.pair else None
            encoded = tokenizer(
                batch["text"],
                pairs,
                truncation="longest_first",
                max_length=self.max_seq_length,
                return_attention_mask=True,
            )
            features = {k: encoded[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
            features[INPUT_LENGTHS] = whole_lengths(tokenizer, batch["text"], pairs)
            features["example"] = batch["example"]  # the example (input line) each row answers
            if all(label is not None for label in batch["label"]):
                features["labels"] = batch["label"]
            return features

        return tokenize
