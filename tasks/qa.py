"""Extractive question answering (SQuAD v1.1 and v2.0): windows, span head, post-processing.

The flow, one way: examples (``tasks.data.squad``) -> ``build_features`` (question + one window of
the context per feature, with each context token's character span in the original context) ->
``QAModule`` (start and end logits per token) -> ``postprocess`` (best valid span per question,
across all of its windows, sliced from the original context) -> metrics and prediction files.

Windows follow google-research/bert's ``run_squad.py``: a context longer than the room left after
``[CLS] question [SEP] ... [SEP]`` is cut into windows whose starts are ``doc_stride`` tokens
apart (``doc_stride`` is the *step between window starts*, not the overlap that Hugging Face
tokenizers call ``stride``; with 384 tokens and a 14-token question, the room is 367 and
``doc_stride=128`` makes windows overlap by 239 tokens). A token that several windows hold is
"max context" in the one where it has the most context on its shorter side.
"""

from __future__ import annotations

import hashlib
import logging
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from tasks.checkpoint import is_task_checkpoint, read_checkpoint
from tasks.data.squad import SquadAnswer, SquadExample, SquadFile, read_squad, squad_from_records
from tasks.datamodule import TaskDataModule
from tasks.io import DataError, UserError, write_json, write_jsonl
from tasks.metrics.squad import evaluate
from tasks.module import TaskModule

log = logging.getLogger(__name__)

OUTSIDE_CONTEXT = -1  # the character offset of [CLS], question, [SEP] and padding tokens


# ----------------------------------------------------------------------------------------------
# Features: windows over the context


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


def check_window_options(max_seq_length: int, max_query_length: int, doc_stride: int) -> None:
    """A UserError for window options that leave no room for the context."""
    if max_query_length < 1:
        raise UserError(f"max_query_length must be at least 1, not {max_query_length}")
    if doc_stride < 1:
        raise UserError(f"doc_stride (the step between window starts) must be at least 1, not {doc_stride}")
    if max_seq_length < max_query_length + 4:
        raise UserError(
            f"max_seq_length={max_seq_length} leaves no room for the context after a question of up to "
            f"max_query_length={max_query_length} tokens and the 3 special tokens; raise max_seq_length "
            "or lower max_query_length"
        )


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


def build_features(
    examples: Sequence[SquadExample],
    tokenizer,
    max_seq_length: int = 384,
    max_query_length: int = 64,
    doc_stride: int = 128,
    with_labels: bool = False,
    version_2_with_negative: bool = False,
    source: str = "<examples>",
) -> tuple[list[QAFeature], FeatureStats]:
    """Tokenise the examples and cut them into windows (see the module docstring).

    ``with_labels`` sets start/end positions from each example's first answer (training);
    an unanswerable example, or a window that does not hold the whole answer, gets [CLS] (0, 0).
    Errors name ``source`` and the question id.
    """
    check_window_options(max_seq_length, max_query_length, doc_stride)
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
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id

    features: list[QAFeature] = []
    for example_index, (example, question_ids) in enumerate(zip(examples, questions, strict=True)):
        if not question_ids:
            raise DataError(
                source, "the question has no tokens (only characters the tokenizer drops)", example=example.id
            )
        if len(question_ids) > max_query_length:
            stats.truncated_questions += 1
            question_ids = question_ids[:max_query_length]
        doc_ids, doc_offsets = context_tokens[example.context]
        if len(doc_ids) == 0:
            raise DataError(
                source, "the context has no tokens (only characters the tokenizer drops)", example=example.id
            )
        answer_tokens = (
            _label_tokens(example, doc_offsets, version_2_with_negative, stats, source)
            if with_labels
            else None
        )

        room = max_seq_length - len(question_ids) - 3
        spans = window_spans(len(doc_ids), room, doc_stride)
        prefix = [cls_id, *question_ids, sep_id]
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
    if stats.truncated_questions:
        log.info(
            "%s: %d question(s) cut to max_query_length=%d tokens",
            source,
            stats.truncated_questions,
            max_query_length,
        )
    if stats.untokenizable_answers:
        log.warning(
            "%s: %d answer(s) hold no token; trained as no-answer", source, stats.untokenizable_answers
        )
    return features, stats


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


# ----------------------------------------------------------------------------------------------
# Post-processing: logits of all windows -> one answer per question


@dataclass
class QAPrediction:
    id: str
    text: str  # "" for no answer
    start: int | None  # character offsets of ``text`` in the context: context[start:end] == text
    end: int | None
    score: float | None  # start + end logit of the answer; the null score for a null answer (v2.0)
    null_odds: float | None = None  # v2.0: null score minus the best span score
    nbest: list[dict] = field(default_factory=list)


def best_indexes(logits: np.ndarray, n_best_size: int) -> np.ndarray:
    """Positions of the ``n_best_size`` largest logits, largest first (ties: lower position first)."""
    order = np.argsort(-logits, kind="stable")
    return order[:n_best_size]


def postprocess(
    examples: Sequence[SquadExample],
    features: Sequence[QAFeature],
    start_logits: Sequence[np.ndarray | None],
    end_logits: Sequence[np.ndarray | None],
    n_best_size: int = 20,
    max_answer_length: int = 30,
    version_2_with_negative: bool = False,
    null_score_diff_threshold: float = 0.0,
) -> list[QAPrediction]:
    """One prediction per example that has at least one window with logits, in example order.

    Per window: the ``n_best_size`` highest start and end logits; a (start, end) pair is valid when
    both are context tokens of the window, end >= start, it spans at most ``max_answer_length``
    tokens and its start token has maximal context in this window. Valid spans of all windows
    compete on start + end logit; their text is sliced from the original context by character
    offsets (casing, accents and spacing kept), and equal texts count once in the n-best list.
    SQuAD v2.0: the null score is the smallest [CLS] start + end logit over the windows; the answer
    is "" when null score - best span score > ``null_score_diff_threshold``.
    ``start_logits[i]`` / ``end_logits[i]`` belong to ``features[i]`` (None: not run).
    """
    by_example: dict[int, list[int]] = {}
    for index, feature in enumerate(features):
        if start_logits[index] is not None:
            by_example.setdefault(feature.example_index, []).append(index)
    predictions = []
    for example_index in sorted(by_example):
        candidates: list[tuple[float, float, int | None, int | None]] = []
        null_logits = (math.inf, math.inf)  # [CLS] start and end logits of the window where they sum lowest
        for index in by_example[example_index]:
            feature, starts, ends = (
                features[index],
                np.asarray(start_logits[index]),
                np.asarray(end_logits[index]),
            )
            if float(starts[0] + ends[0]) < sum(null_logits):
                null_logits = (float(starts[0]), float(ends[0]))
            candidates.extend(_window_candidates(feature, starts, ends, n_best_size, max_answer_length))
        if version_2_with_negative:
            candidates.append((*null_logits, None, None))
        predictions.append(
            _decide(
                examples[example_index],
                candidates,
                null_logits,
                n_best_size,
                version_2_with_negative,
                null_score_diff_threshold,
            )
        )
    return predictions


def _window_candidates(
    feature: QAFeature, starts: np.ndarray, ends: np.ndarray, n_best_size: int, max_answer_length: int
) -> list[tuple[float, float, int | None, int | None]]:
    """(start logit, end logit, start char, end char) of the valid spans of one window."""
    length = min(len(feature), len(starts))
    in_context = feature.offsets[:length, 0] != OUTSIDE_CONTEXT
    spans = []
    for start in best_indexes(starts[:length], n_best_size):
        if not (in_context[start] and feature.max_context[start]):
            continue
        for end in best_indexes(ends[:length], n_best_size):
            if in_context[end] and start <= end < start + max_answer_length:
                spans.append(
                    (
                        float(starts[start]),
                        float(ends[end]),
                        int(feature.offsets[start, 0]),
                        int(feature.offsets[end, 1]),
                    )
                )
    return spans


def _decide(
    example: SquadExample,
    candidates: list[tuple[float, float, int | None, int | None]],
    null_logits: tuple[float, float],
    n_best_size: int,
    version_2_with_negative: bool,
    null_score_diff_threshold: float,
) -> QAPrediction:
    """The n-best list and the answer of one example, from its candidates (the null one has no offsets)."""
    candidates.sort(key=lambda span: span[0] + span[1], reverse=True)
    nbest, seen = [], set()
    for start_logit, end_logit, start, end in candidates:
        text = example.context[start:end] if start is not None else ""
        if text in seen:
            continue
        seen.add(text)
        nbest.append(
            {"text": text, "start": start, "end": end, "start_logit": start_logit, "end_logit": end_logit}
        )
        if len(nbest) == n_best_size:
            break
    if version_2_with_negative and "" not in seen:  # the null answer always stays in the list
        nbest.append(
            {
                "text": "",
                "start": None,
                "end": None,
                "start_logit": null_logits[0],
                "end_logit": null_logits[1],
            }
        )
    _add_probabilities(nbest)
    best = next((entry for entry in nbest if entry["text"]), None)
    null_score, null_odds = sum(null_logits), None
    if version_2_with_negative:
        null_odds = null_score - (best["start_logit"] + best["end_logit"]) if best else math.inf
    if best is None or (version_2_with_negative and null_odds > null_score_diff_threshold):
        score = null_score if version_2_with_negative else None
        return QAPrediction(example.id, "", None, None, score, null_odds, nbest)
    score = best["start_logit"] + best["end_logit"]
    return QAPrediction(example.id, best["text"], best["start"], best["end"], score, null_odds, nbest)


def _add_probabilities(nbest: list[dict]) -> None:
    """Softmax of the n-best totals, as in run_squad.py's nbest_predictions.json."""
    if not nbest:
        return
    totals = np.array([entry["start_logit"] + entry["end_logit"] for entry in nbest], dtype=np.float64)
    weights = np.exp(totals - totals.max())
    for entry, probability in zip(nbest, weights / weights.sum(), strict=True):
        entry["probability"] = float(probability)


# ----------------------------------------------------------------------------------------------
# Lightning: the data module and the span head


def _feature_columns(
    features: Sequence[QAFeature], example_offset: int, with_labels: bool
) -> dict[str, list]:
    """Arrow-friendly columns of features: model inputs, labels and what post-processing needs."""
    columns: dict[str, list] = {
        "input_ids": [f.input_ids.tolist() for f in features],
        "token_type_ids": [f.token_type_ids.tolist() for f in features],
        "attention_mask": [[1] * len(f) for f in features],
        "example_index": [example_offset + f.example_index for f in features],
        "window_index": [f.window_index for f in features],
        "offset_starts": [f.offsets[:, 0].tolist() for f in features],
        "offset_ends": [f.offsets[:, 1].tolist() for f in features],
        "max_context": [f.max_context.astype(np.int8).tolist() for f in features],
    }
    if with_labels:
        columns["start_positions"] = [f.start_position for f in features]
        columns["end_positions"] = [f.end_position for f in features]
    return columns


def _example_rows(examples: Sequence[SquadExample]) -> list[dict[str, Any]]:
    return [
        {
            "example_index": index,
            "id": e.id,
            "question": e.question,
            "context": e.context,
            "has_answers": e.answers is not None,
            "answer_texts": [a.text for a in e.answers or ()],
            "answer_starts": [a.start for a in e.answers or ()],
        }
        for index, e in enumerate(examples)
    ]


def _features_code_digest() -> str:
    """A digest of the feature code, in the cache key: a change to it must not reuse stale windows."""
    functions = (
        build_features,
        window_spans,
        max_context_masks,
        answer_token_span,
        _label_tokens,
        _cover_combining_marks,
        _feature_columns,
    )
    return hashlib.sha256(b"".join(f.__code__.co_code for f in functions)).hexdigest()


def _rows_to_examples(batch: dict[str, list]) -> list[SquadExample]:
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


def _features_from_table(table: datasets.Dataset) -> list[QAFeature]:
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


class QADataModule(TaskDataModule):
    """SQuAD v1.1/v2.0 JSON or JSONL question files, cut into windows ``[CLS] question [SEP] context [SEP]``.

    Args:
        max_seq_length: window length in tokens, question and special tokens included (384, as BERT).
        max_query_length: questions are cut to this many tokens (64, as run_squad.py); the count of
            cut questions is logged. ``max_seq_length`` must leave room for at least one context token.
        doc_stride: the step, in tokens, between the starts of consecutive windows over a long
            context (google-research/bert's ``doc_stride``). Not an overlap: Hugging Face tokenizers'
            ``stride`` is the overlap between windows, and the same number there gives other windows.
        version_2_with_negative: unanswerable questions exist (SQuAD v2.0): they train towards
            [CLS] and the model may answer "". Default: v2.0 when a data file has unanswerable
            questions (or ``is_impossible``, or a "v2" version), or when the checkpoint was trained so.
        Other arguments: see ``TaskDataModule``. ``predict`` writes JSONL ``{id, answer, start,
        end, score}`` (character offsets into the context, ``context[start:end] == answer``).
    """

    model_columns = (
        "input_ids",
        "token_type_ids",
        "attention_mask",
        "start_positions",
        "end_positions",
        "feature_index",
    )

    def __init__(
        self,
        max_seq_length: int = 384,
        max_query_length: int = 64,
        doc_stride: int = 128,
        version_2_with_negative: bool | None = None,
        **kwargs: Any,
    ):
        super().__init__(max_seq_length=max_seq_length, **kwargs)
        self.max_query_length, self.doc_stride = max_query_length, doc_stride
        self.version_2_with_negative = version_2_with_negative
        self._files: dict[str, SquadFile] = {}
        self._tables: dict[str, datasets.Dataset] = {}
        self._features: dict[str, list[QAFeature]] = {}
        self._loader_tables: dict[str, datasets.Dataset] = {}  # model columns only

    # -- link sources ----------------------------------------------------------------------------

    @property
    def task(self) -> str:
        # Read when the CLI links data.task to the model, right after instantiation: option errors
        # raised here reach the user as they are (jsonargparse rewraps errors raised in __init__).
        check_window_options(self._max_seq_length, self.max_query_length, self.doc_stride)
        return "squad_v2" if self.is_version_2 else "squad"

    @property
    def is_version_2(self) -> bool:
        if self.version_2_with_negative is None:
            stored = None
            if is_task_checkpoint(self.tokenizer_source):
                stored = read_checkpoint(self.tokenizer_source)["hyper_parameters"].get("task")
            labelled = [split for split in ("train", "validation", "test") if self._has_split(split)]
            self.version_2_with_negative = stored == "squad_v2" or any(
                self.read(split).version_2_with_negative for split in labelled
            )
        return self.version_2_with_negative

    # -- reading ---------------------------------------------------------------------------------

    def _has_split(self, split: str) -> bool:
        return self.split_file(split) is not None or (
            self.dataset is not None and self.hub_split(split) is not None
        )

    def read(self, split: str) -> SquadFile:
        """The questions of a split, from its file (SQuAD JSON or JSONL) or the hub data set."""
        if split not in self._files:
            path = self.split_file(split)
            if path is not None:
                self._files[split] = read_squad(path)
            elif self.dataset is not None and self.hub_split(split) is not None:
                self._files[split] = squad_from_records(f"{self.dataset}[{split}]", self.hub_split(split))
            else:
                raise UserError(f"no {split} data: set --data.{split}_file")
        return self._files[split]

    def examples(self, split: str) -> list[SquadExample]:
        return self.read(split).examples

    def features(self, split: str) -> list[QAFeature]:
        """The windows of a split in feature_index order, for post-processing."""
        if split not in self._features:
            self._features[split] = _features_from_table(self._tables[split])
        return self._features[split]

    # -- features --------------------------------------------------------------------------------

    def build(self, split: str) -> datasets.Dataset:
        data = self.read(split)
        with_labels = split == "train"
        if split in ("validation", "test") and not data.has_answers:
            raise UserError(
                f"{data.path}: some questions have no 'answers'; {split} needs gold answers (use predict)"
            )
        tokenizer, version_2, source = self.tokenizer, self.is_version_2, str(data.path)
        max_seq_length, max_query_length, doc_stride = (
            self.max_seq_length,
            self.max_query_length,
            self.doc_stride,
        )

        def featurize_batch(batch: dict[str, list]) -> dict[str, list]:
            features, _ = build_features(
                _rows_to_examples(batch),
                tokenizer,
                max_seq_length,
                max_query_length,
                doc_stride,
                with_labels=with_labels,
                version_2_with_negative=version_2,
                source=source,
            )
            return _feature_columns(features, batch["example_index"][0], with_labels)

        settings = {
            "max_query_length": max_query_length,
            "doc_stride": doc_stride,
            "labels": with_labels,
            "version_2_with_negative": version_2,
            "features_code": _features_code_digest(),
        }
        table = self.featurize(
            f"{split}-{data.path.name}", _example_rows(data.examples), featurize_batch, settings
        )
        table = table.add_column("feature_index", list(range(len(table))))
        self._tables[split] = table
        self._features.pop(split, None)
        rank_zero_info(
            f"{split}: {len(data.examples)} questions -> {len(table)} windows of up to {max_seq_length} tokens"
        )
        return table.select_columns([c for c in self.model_columns if c in table.column_names])

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self._loader_tables["train"] = self.build("train")
        if stage in ("fit", "validate") and self._has_split("validation"):
            self._loader_tables["validation"] = self.build("validation")
        if stage == "test":
            self._loader_tables["test"] = self.build("test")
        if stage == "predict":
            self._loader_tables["predict"] = self.build("predict")

    def train_dataloader(self):
        return self.make_loader(self._loader_tables["train"], shuffle=True)

    def val_dataloader(self):
        return (
            self.make_loader(self._loader_tables["validation"], shuffle=False)
            if "validation" in self._loader_tables
            else []
        )

    def test_dataloader(self):
        return self.make_loader(self._loader_tables["test"], shuffle=False)

    def predict_dataloader(self):
        return self.make_loader(self._loader_tables["predict"], shuffle=False)

    # -- predictions -----------------------------------------------------------------------------

    def write_predictions(self, outputs: list[list[dict[str, Any]]]) -> Path:
        """JSONL ``{id, answer, start, end, score}``, one line per question in input order, atomically."""
        return write_jsonl(self.predictions_path(), [record for batch in outputs for record in batch])


class QAModule(TaskModule):
    """Span head: a linear layer on the last hidden states gives a start and an end logit per token.

    Loss: the mean of the start and end cross-entropies (padding masked out). Validation and test
    post-process all windows (see ``postprocess``), log the official SQuAD metrics (``exact_match``
    and ``f1``; v2.0 also ``HasAns_*``, ``NoAns_*``, ``best_exact``, ``best_f1`` and their
    thresholds) and write ``predictions.json`` ({id: answer}, the official format),
    ``nbest_predictions.json`` and, for v2.0, ``null_odds.json`` into the run directory: the
    latest evaluation's.

    Args:
        n_best_size: start and end candidates per window, and the length of the n-best lists.
        max_answer_length: longest answer, in tokens.
        null_score_diff_threshold: SQuAD v2.0: answer "" when null score - best span score exceeds
            this; the ``best_f1_thresh`` a validation reports is the value to use.
    """

    main_metric = "val/f1"
    main_metric_mode = "max"

    def __init__(
        self,
        n_best_size: int = 20,
        max_answer_length: int = 30,
        null_score_diff_threshold: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.qa_outputs = nn.Linear(self.hidden_size, 2)
        self.qa_outputs.weight.data.normal_(0.0, self.encoder.config.initializer_range)
        self.qa_outputs.bias.data.zero_()
        self._logits: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def version_2_with_negative(self) -> bool:
        return self.hparams.task == "squad_v2"

    def setup(self, stage: str) -> None:
        # Checked here, not in __init__: jsonargparse rewraps errors raised while instantiating.
        n_best_size, max_answer_length = self.hparams.n_best_size, self.hparams.max_answer_length
        if n_best_size < 1 or max_answer_length < 1:
            raise UserError(
                f"n_best_size ({n_best_size}) and max_answer_length ({max_answer_length}) must be >= 1"
            )

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Start and end logits [B, T]; padding positions get -10000 so they never win or weigh."""
        logits = self.qa_outputs(self.encode(batch).last_hidden_state)  # [B, T, 2]
        start, end = logits.unbind(-1)
        padding = batch["attention_mask"] == 0
        return start.masked_fill(padding, -10000.0), end.masked_fill(padding, -10000.0)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        start, end = self(batch)
        loss = (
            F.cross_entropy(start, batch["start_positions"]) + F.cross_entropy(end, batch["end_positions"])
        ) / 2
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss

    # -- evaluation --------------------------------------------------------------------------------

    def _collect(self, batch: dict[str, Any]) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(feature index, start logits, end logits) per window, cut to its real length."""
        start, end = (t.detach().float().cpu().numpy() for t in self(batch))
        lengths = batch["attention_mask"].sum(-1).tolist()
        indices = batch["feature_index"].tolist()
        return [
            (index, start[i, :n], end[i, :n])
            for i, (index, n) in enumerate(zip(indices, lengths, strict=True))
        ]

    def on_validation_epoch_start(self) -> None:
        self._logits = {}

    on_test_epoch_start = on_validation_epoch_start

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._logits.update((index, (s, e)) for index, s, e in self._collect(batch))

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._evaluate("validation", "val")
        self._logits = {}

    def on_test_epoch_end(self) -> None:
        self._evaluate("test", "test")
        self._logits = {}

    def decode(self, examples: Sequence[SquadExample], features: Sequence[QAFeature]) -> list[QAPrediction]:
        """Post-process the collected logits with this module's settings."""
        starts: list[np.ndarray | None] = [None] * len(features)
        ends: list[np.ndarray | None] = [None] * len(features)
        for index, (start, end) in self._logits.items():
            starts[index], ends[index] = start, end
        return postprocess(
            examples,
            features,
            starts,
            ends,
            self.hparams.n_best_size,
            self.hparams.max_answer_length,
            self.version_2_with_negative,
            self.hparams.null_score_diff_threshold,
        )

    def _evaluate(self, split: str, prefix: str) -> None:
        if self.trainer.world_size > 1:
            raise UserError("SQuAD evaluation runs on one device (its post-processing needs every window)")
        datamodule = self.trainer.datamodule
        examples = datamodule.examples(split)
        predictions = self.decode(examples, datamodule.features(split))
        gold = {e.id: [a.text for a in e.answers or ()] for e in examples}
        answers = {p.id: p.text for p in predictions}
        odds = {p.id: p.null_odds for p in predictions} if self.version_2_with_negative else None
        # The predictions already say "" where the odds exceed the threshold; scoring with the same
        # threshold keeps the reported EM/F1 those of the written predictions.
        metrics = evaluate(
            gold, answers, self.version_2_with_negative, odds, self.hparams.null_score_diff_threshold
        )
        for name, value in metrics.items():
            if not name.endswith("total"):
                self.log(f"{prefix}/{'exact_match' if name == 'exact' else name}", float(value))
        if self.trainer.is_global_zero:
            self._write_eval_files(predictions)

    def _write_eval_files(self, predictions: list[QAPrediction]) -> None:
        write_json(self.run_dir / "predictions.json", {p.id: p.text for p in predictions})
        write_json(self.run_dir / "nbest_predictions.json", {p.id: p.nbest for p in predictions})
        if self.version_2_with_negative:
            write_json(self.run_dir / "null_odds.json", {p.id: _finite(p.null_odds) for p in predictions})

    # -- prediction --------------------------------------------------------------------------------

    def on_predict_epoch_start(self) -> None:
        super().on_predict_epoch_start()
        self._logits = {}

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
        windows = self._collect(batch)
        self._logits.update((index, (s, e)) for index, s, e in windows)
        return windows

    def on_predict_epoch_end(self) -> None:
        # Windows of one question may sit in different batches: answers exist only once all ran.
        datamodule = self.trainer.datamodule
        predictions = self.decode(datamodule.examples("predict"), datamodule.features("predict"))
        self._predictions = [
            [
                {
                    "id": p.id,
                    "answer": p.text,
                    "start": p.start,
                    "end": p.end,
                    "score": None if p.score is None else round(p.score, 6),
                }
                for p in predictions
            ]
        ]
        self._logits = {}
        super().on_predict_epoch_end()


# null_odds.json stays strict JSON: a question without any valid span gets this instead of infinity.
NO_SPAN_NULL_ODDS = 1e9


def _finite(odds: float | None) -> float | None:
    return NO_SPAN_NULL_ODDS if odds is not None and math.isinf(odds) else odds
