"""SQuAD decoding: start/end logits of every window -> one answer per question (n-best, v2.0 null)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.squad import SquadExample
from ..data.words import whole_word_span
from ..features.qa import OUTSIDE_CONTEXT, QAFeature
from ..io import UserError


@dataclass
class QAPrediction:
    id: str
    text: str  # "" for no answer
    start: int | None  # character offsets of ``text`` in the context: context[start:end] == text
    end: int | None
    score: float | None  # start + end logit of the answer; the null score for a null answer (v2.0)
    null_odds: float | None = None  # v2.0: null score minus the best span score
    nbest: list[dict] = field(default_factory=list)


class QAContext:
    """What decoding a split needs besides the logits: each question, and its windows.

    ``example(i)`` gives question ``i`` (from a list, or read from a streamed file in order);
    ``read_windows(first, end)`` the windows with feature indices ``first..end-1``: the windows of
    one question are consecutive, ``windows[i]`` of them for question ``i``.
    """

    def __init__(
        self,
        example: Callable[[int], SquadExample],
        windows: Sequence[int],
        read_windows: Callable[[int, int], Sequence[QAFeature]],
    ):
        self.example, self.read_windows = example, read_windows
        self.starts = np.concatenate([[0], np.cumsum(windows, dtype=np.int64)])

    def windows_of(self, example: int) -> Sequence[QAFeature]:
        return self.read_windows(int(self.starts[example]), int(self.starts[example + 1]))


def window_logits(outputs: Any, batch: dict[str, Any]) -> list[tuple[int, int, Any]]:
    """(example, feature, (start logits, end logits)) per window of a batch, cut to its real length:
    what predict, validate, test and the plain predictor decode from."""
    start, end = (t.detach().float().cpu().numpy() for t in outputs)
    lengths = batch["attention_mask"].sum(-1).tolist()
    rows = zip(batch["example_index"].tolist(), batch["feature_index"].tolist(), lengths, strict=True)
    return [(example, feature, (start[i, :n], end[i, :n])) for i, (example, feature, n) in enumerate(rows)]


@dataclass(frozen=True)
class QADecoder:
    """How a question's answer is chosen from the logits of its windows (see ``postprocess``)."""

    n_best_size: int = 20
    max_answer_length: int = 30
    version_2_with_negative: bool = False
    null_score_diff_threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.n_best_size < 1 or self.max_answer_length < 1:
            raise UserError(
                f"n_best_size ({self.n_best_size}) and max_answer_length ({self.max_answer_length}) must be >= 1"
            )

    def __call__(
        self,
        example: SquadExample,
        features: Sequence[QAFeature],
        outputs: Sequence[tuple[np.ndarray, np.ndarray]],
    ) -> QAPrediction:
        """The answer of ``example`` from ``outputs[i]``, the (start, end) logits of ``features[i]``."""
        return decode_example(
            example,
            features,
            [start for start, _ in outputs],
            [end for _, end in outputs],
            self.n_best_size,
            self.max_answer_length,
            self.version_2_with_negative,
            self.null_score_diff_threshold,
        )


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
    return [
        decode_example(
            examples[example_index],
            [features[i] for i in indices],
            [start_logits[i] for i in indices],
            [end_logits[i] for i in indices],
            n_best_size,
            max_answer_length,
            version_2_with_negative,
            null_score_diff_threshold,
        )
        for example_index, indices in sorted(by_example.items())
    ]


def decode_example(
    example: SquadExample,
    features: Sequence[QAFeature],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    n_best_size: int = 20,
    max_answer_length: int = 30,
    version_2_with_negative: bool = False,
    null_score_diff_threshold: float = 0.0,
) -> QAPrediction:
    """The answer of one example from the logits of its windows (see ``postprocess``)."""
    candidates: list[tuple[float, float, int | None, int | None]] = []
    null_logits = (math.inf, math.inf)  # [CLS] start and end logits of the window where they sum lowest
    for feature, starts, ends in zip(features, start_logits, end_logits, strict=True):
        starts, ends = np.asarray(starts), np.asarray(ends)
        if float(starts[0] + ends[0]) < sum(null_logits):
            null_logits = (float(starts[0]), float(ends[0]))
        candidates.extend(_window_candidates(feature, starts, ends, n_best_size, max_answer_length))
    if version_2_with_negative:
        candidates.append((*null_logits, None, None))
    return _decide(
        example, candidates, null_logits, n_best_size, version_2_with_negative, null_score_diff_threshold
    )


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
        if start is not None:  # answers are whole words of the context, as run_squad.py's are
            start, end = whole_word_span(example.context, start, end)
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
