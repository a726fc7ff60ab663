"""SQuAD features: question + context windows, max-context masks, answer spans; pure, no Lightning.

The flow, one way: examples (``tasks.data.squad``) -> ``QAFeaturizer`` (question + one window of
the context per feature, with each context token's character span in the original context) ->
``QAModule`` (start and end logits per token) -> ``tasks.decoding.qa`` (best valid span per
question, across all of its windows, sliced from the original context) -> metrics and prediction
files.

Windows follow google-research/bert's ``run_squad.py``: a context longer than the room left after
``[CLS] question [SEP] ... [SEP]`` is cut into windows whose starts are ``doc_stride`` tokens
apart (``doc_stride`` is the *step between window starts*, not the overlap that Hugging Face
tokenizers call ``stride``; with 384 tokens and a 14-token question, the room is 367 and
``doc_stride=128`` makes windows overlap by 239 tokens). A token that several windows hold is
"max context" in the one where it has the most context on its shorter side.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.squad import SquadAnswer, SquadExample
from ..feature_cache import INPUT_LENGTHS
from ..io import DataError, UserError

if TYPE_CHECKING:  # feature tables are datasets' (the plain predictor makes its features in memory)
    import datasets

log = logging.getLogger(__name__)

OUTSIDE_CONTEXT = -1  # the character offset of [CLS], question, [SEP] and padding tokens


@dataclass
class QAFeature:
    """One window of one example: ``[CLS] question [SEP] context window [SEP]``."""

    example_index: int
    window_index: int  # 0 for the first window of the example
    input_ids: np.ndarray  # int32 [T]
    token_type_ids: np.ndarray  # int8 [T]: 0 for [CLS] question [SEP], 1 for the window and its [SEP]
    # int32 [T, 2]: the character span [start, end) in the example's context of each context
    # token; OUTSIDE_CONTEXT for the other tokens.
    offsets: np.ndarray
    max_context: np.ndarray  # bool [T]: this window is the token's best window (max-context rule)
    start_position: int = 0  # training label: the answer's first token, or 0 ([CLS]) for "no answer here"
    end_position: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class FeatureStats:
    truncated_questions: int = 0  # questions cut to max_query_length tokens
    answers_outside_window: int = 0  # training windows labelled [CLS] because the answer is elsewhere
    untokenizable_answers: int = 0  # answers made only of characters the tokenizer drops
    # Each question's input in tokens (question cut to max_query_length, whole context, 3 special
    # tokens): longer than max_seq_length, it is split into windows.
    input_lengths: list[int] = field(default_factory=list)


def window_spans(num_tokens: int, room: int, doc_stride: int) -> list[tuple[int, int]]:
    """(start, length) of each window over ``num_tokens`` context tokens, google-research/bert style.

    Windows start every ``doc_stride`` tokens until one reaches the end of the context; a step
    never exceeds a window's length, so no token is skipped.
    """
    spans, start = [], 0
    while start < num_tokens:
        length = min(num_tokens - start, room)
        spans.append((start, length))
        if start + length == num_tokens:
            break
        start += min(length, doc_stride)
    return spans


def max_context_masks(spans: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """For each window, which of its tokens have their maximal context in it.

    A token's context in a window is min(tokens left of it, tokens right of it) + 0.01 * window
    length; the window with the highest score wins, the earlier one on ties (as in run_squad.py).
    """
    num_tokens = max(start + length for start, length in spans)
    best_score = np.full(num_tokens, -np.inf)
    best_window = np.zeros(num_tokens, dtype=np.int64)
    for index, (start, length) in enumerate(spans):
        positions = np.arange(start, start + length)
        score = np.minimum(positions - start, start + length - 1 - positions) + 0.01 * length
        better = score > best_score[positions]
        best_score[positions[better]] = score[better]
        best_window[positions[better]] = index
    return [best_window[start : start + length] == index for index, (start, length) in enumerate(spans)]


def answer_token_span(offsets: np.ndarray, start_char: int, end_char: int) -> tuple[int, int] | None:
    """First and last context token overlapping the characters [start_char, end_char); None if none."""
    overlapping = np.nonzero((offsets[:, 0] < end_char) & (offsets[:, 1] > start_char))[0]
    if len(overlapping) == 0:
        return None
    return int(overlapping[0]), int(overlapping[-1])


@dataclass(frozen=True)
class QAFeaturizer:
    """How examples become windows. Its fields are the feature cache key: two featurizers that
    compare equal make the same windows from the same examples and tokenizer.

    ``with_labels`` sets start/end positions from each example's first answer (training); an
    unanswerable example, or a window that does not hold the whole answer, gets [CLS] (0, 0).
    ``version_2_with_negative`` allows unanswerable training questions.
    """

    max_seq_length: int = 384
    max_query_length: int = 64
    doc_stride: int = 128
    with_labels: bool = False
    version_2_with_negative: bool = False

    def __post_init__(self) -> None:
        # Checked when the options are given, before any file is read.
        if self.max_query_length < 1:
            raise UserError(f"max_query_length must be at least 1, not {self.max_query_length}")
        if self.doc_stride < 1:
            raise UserError(
                f"doc_stride (the step between window starts) must be at least 1, not {self.doc_stride}"
            )
        if self.max_seq_length < self.max_query_length + 4:
            raise UserError(
                f"max_seq_length={self.max_seq_length} leaves no room for the context after a question of "
                f"up to max_query_length={self.max_query_length} tokens and the 3 special tokens; raise "
                "max_seq_length or lower max_query_length"
            )

    def cache_key(self) -> dict[str, Any]:
        return asdict(self)

    def batch_step(self, tokenizer, source: str) -> Callable[[dict[str, list]], dict[str, list]]:
        """A batched ``Dataset.map`` step: rows of ``example_rows`` -> the columns of their windows."""

        def columns(batch: dict[str, list]) -> dict[str, list]:
            features, stats = self(rows_to_examples(batch), tokenizer, source)
            return {
                **feature_columns(features, batch["example_index"], self.with_labels),
                INPUT_LENGTHS: stats.input_lengths,
            }

        return columns

    def __call__(
        self, examples: Sequence[SquadExample], tokenizer, source: str = "<examples>"
    ) -> tuple[list[QAFeature], FeatureStats]:
        """Tokenise the examples and cut them into windows (see the module docstring); errors name
        ``source`` and the question id."""
        stats = FeatureStats()
        # Many questions share one paragraph: tokenise each distinct context once.
        contexts = list(dict.fromkeys(example.context for example in examples))
        context_encodings = tokenizer(
            contexts,
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )
        context_tokens = {
            context: (np.asarray(ids, dtype=np.int32), _cover_combining_marks(context, offsets))
            for context, ids, offsets in zip(
                contexts, context_encodings["input_ids"], context_encodings["offset_mapping"], strict=True
            )
        }
        questions = tokenizer(
            [example.question for example in examples],
            add_special_tokens=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )["input_ids"]
        features: list[QAFeature] = []
        for example_index, (example, question_ids) in enumerate(zip(examples, questions, strict=True)):
            if not question_ids:
                raise DataError(
                    source,
                    "the question has no tokens (only characters the tokenizer drops)",
                    example=example.id,
                )
            if len(question_ids) > self.max_query_length:
                stats.truncated_questions += 1
                question_ids = question_ids[: self.max_query_length]
            doc_ids, doc_offsets = context_tokens[example.context]
            if len(doc_ids) == 0:
                raise DataError(
                    source,
                    "the context has no tokens (only characters the tokenizer drops)",
                    example=example.id,
                )
            answer_tokens = (
                _label_tokens(example, doc_offsets, self.version_2_with_negative, stats, source)
                if self.with_labels
                else None
            )
            prefix = [tokenizer.cls_token_id, *question_ids, tokenizer.sep_token_id]
            stats.input_lengths.append(len(prefix) + len(doc_ids) + 1)
            features += self._windows(example_index, prefix, doc_ids, doc_offsets, answer_tokens, stats)
        if stats.truncated_questions:
            log.info(
                "%s: %d question(s) cut to max_query_length=%d tokens",
                source,
                stats.truncated_questions,
                self.max_query_length,
            )
        if stats.untokenizable_answers:
            log.warning(
                "%s: %d answer(s) hold no token; trained as no-answer", source, stats.untokenizable_answers
            )
        return features, stats

    def _windows(
        self,
        example_index: int,
        prefix: list[int],
        doc_ids: np.ndarray,
        doc_offsets: np.ndarray,
        answer_tokens: tuple[int, int] | None,
        stats: FeatureStats,
    ) -> list[QAFeature]:
        """The windows ``prefix + context window + [SEP]`` of one example, labelled when
        ``answer_tokens`` (the answer's first and last context token) is given."""
        sep_id = prefix[-1]
        spans = window_spans(len(doc_ids), self.max_seq_length - len(prefix) - 1, self.doc_stride)
        features = []
        for window_index, ((start, length), max_context) in enumerate(
            zip(spans, max_context_masks(spans), strict=True)
        ):
            input_ids = np.array([*prefix, *doc_ids[start : start + length], sep_id], dtype=np.int32)
            token_type_ids = np.zeros(len(input_ids), dtype=np.int8)
            token_type_ids[len(prefix) :] = 1
            offsets = np.full((len(input_ids), 2), OUTSIDE_CONTEXT, dtype=np.int32)
            offsets[len(prefix) : len(prefix) + length] = doc_offsets[start : start + length]
            is_max = np.zeros(len(input_ids), dtype=bool)
            is_max[len(prefix) : len(prefix) + length] = max_context
            feature = QAFeature(example_index, window_index, input_ids, token_type_ids, offsets, is_max)
            if answer_tokens is not None:
                first, last = answer_tokens
                if start <= first and last < start + length:
                    feature.start_position = first - start + len(prefix)
                    feature.end_position = last - start + len(prefix)
                else:
                    stats.answers_outside_window += 1
            features.append(feature)
        return features


def _cover_combining_marks(context: str, offsets: list[tuple[int, int]]) -> np.ndarray:
    """Token offsets as int32 [N, 2], each end moved past the combining marks that follow it.

    An uncased tokenizer strips accents, and with them the offsets of decomposed combining marks
    ("Zoe" + U+0308): without this, an answer ending in "Zoë" would be sliced as "Zoe".
    """
    array = np.asarray(offsets, dtype=np.int32).reshape(-1, 2)
    if context.isascii():
        return array
    for index in range(len(array)):
        end = int(array[index, 1])
        limit = int(array[index + 1, 0]) if index + 1 < len(array) else len(context)
        while end < limit and unicodedata.category(context[end]) == "Mn":
            end += 1
        array[index, 1] = end
    return array


def _label_tokens(
    example: SquadExample,
    doc_offsets: np.ndarray,
    version_2_with_negative: bool,
    stats: FeatureStats,
    source: str,
) -> tuple[int, int] | None:
    """The first answer's token span in the whole context; None for a no-answer label."""
    if example.answers is None:
        raise DataError(source, "the question has no 'answers'; training needs them", example=example.id)
    if not example.answers:
        if not version_2_with_negative:
            raise DataError(
                source,
                "unanswerable question in SQuAD v1.1 training data (use v2.0 data or version_2_with_negative=true)",
                example=example.id,
            )
        return None
    answer = example.answers[0]  # like run_squad.py: train on the first gold answer
    span = answer_token_span(doc_offsets, answer.start, answer.end)
    if span is None:
        stats.untokenizable_answers += 1
    return span


def feature_columns(
    features: Sequence[QAFeature], example_indices: Sequence[int], with_labels: bool
) -> dict[str, list]:
    """Arrow-friendly columns of features: model inputs, labels and what post-processing needs.
    ``example_indices[i]`` is the split-wide number of the batch's example ``i``."""
    columns: dict[str, list] = {
        "input_ids": [f.input_ids.tolist() for f in features],
        "token_type_ids": [f.token_type_ids.tolist() for f in features],
        "attention_mask": [[1] * len(f) for f in features],
        "example_index": [example_indices[f.example_index] for f in features],
        "window_index": [f.window_index for f in features],
        "offset_starts": [f.offsets[:, 0].tolist() for f in features],
        "offset_ends": [f.offsets[:, 1].tolist() for f in features],
        "max_context": [f.max_context.astype(np.int8).tolist() for f in features],
    }
    if with_labels:
        columns["start_positions"] = [f.start_position for f in features]
        columns["end_positions"] = [f.end_position for f in features]
    return columns


def example_rows(examples: Iterable[SquadExample]) -> Iterator[dict[str, Any]]:
    """The examples as Arrow-friendly rows, numbered in order (``rows_to_examples`` reverses it)."""
    for index, e in enumerate(examples):
        yield {
            "example_index": index,
            "id": e.id,
            "question": e.question,
            "context": e.context,
            "has_answers": e.answers is not None,
            "answer_texts": [a.text for a in e.answers or ()],
            "answer_starts": [a.start for a in e.answers or ()],
        }


def rows_to_examples(batch: dict[str, list]) -> list[SquadExample]:
    return [
        SquadExample(
            qid,
            question,
            context,
            tuple(SquadAnswer(t, s) for t, s in zip(texts, starts, strict=True)) if has else None,
        )
        for qid, question, context, has, texts, starts in zip(
            batch["id"],
            batch["question"],
            batch["context"],
            batch["has_answers"],
            batch["answer_texts"],
            batch["answer_starts"],
            strict=True,
        )
    ]


# What the loaders hand the model and the collection of its outputs; offsets stay for decoding.
LOADER_COLUMNS = (
    "input_ids",
    "token_type_ids",
    "attention_mask",
    "start_positions",
    "end_positions",
    "example_index",
    "feature_index",
)


def loader_table(table: datasets.Dataset) -> datasets.Dataset:
    """The loader's columns of a feature table (labels only where it has them)."""
    return table.select_columns([c for c in LOADER_COLUMNS if c in table.column_names])


def features_from_table(table: datasets.Dataset) -> list[QAFeature]:
    """The post-processing side of each feature (offsets, max-context flags), as numpy arrays."""
    columns = [
        "example_index",
        "window_index",
        "input_ids",
        "token_type_ids",
        "offset_starts",
        "offset_ends",
        "max_context",
    ]
    features = []
    for row in table.select_columns(columns).with_format("numpy"):
        offsets = np.stack([row["offset_starts"], row["offset_ends"]], axis=1).astype(np.int32)
        features.append(
            QAFeature(
                int(row["example_index"]),
                int(row["window_index"]),
                row["input_ids"].astype(np.int32),
                row["token_type_ids"].astype(np.int8),
                offsets,
                row["max_context"].astype(bool),
            )
        )
    return features


def windows_per_example(table: datasets.Dataset, num_examples: int) -> np.ndarray:
    """How many windows each of ``num_examples`` examples has in a feature table."""
    indices = np.asarray(table["example_index"] if len(table) else [], dtype=np.int64)
    return np.bincount(indices, minlength=num_examples)
