"""Entity-level NER scores, computed by seqeval (the conlleval numbers papers report).

Token accuracy is returned as a secondary number only: with most tokens tagged O it says little.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

from seqeval.metrics import classification_report
from seqeval.scheme import IOB1, IOB2, IOBES

from ..data.conll import normalize_scheme

_SEQEVAL_SCHEMES = {"BIO": IOB2, "IOB1": IOB1, "IOBES": IOBES}


def ner_scores(
    gold: Sequence[Sequence[str]],
    predicted: Sequence[Sequence[str]],
    scheme: str = "BIO",
    strict: bool = False,
) -> dict[str, float]:
    """Micro precision/recall/F1 over entities, F1 per entity type, and token accuracy.

    Keys: ``precision``, ``recall``, ``f1``; ``f1_<TYPE>``, ``precision_<TYPE>``, ``recall_<TYPE>``
    for each type found in gold or predictions; ``token_accuracy``. ``strict=False`` is conlleval's chunking (any scheme);
    ``strict=True`` is seqeval's strict mode, which only counts entities well formed in ``scheme``.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    for index, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted, strict=True)):
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(
                f"sentence {index}: {len(gold_tags)} gold tags but {len(predicted_tags)} predicted"
            )
    gold_lists = [list(tags) for tags in gold]
    predicted_lists = [list(tags) for tags in predicted]
    options = {"mode": "strict", "scheme": _SEQEVAL_SCHEMES[normalize_scheme(scheme)]} if strict else {}
    with warnings.catch_warnings():
        # seqeval warns when a type is never predicted; a 0.0 for it is the answer we want.
        warnings.simplefilter("ignore")
        report = classification_report(
            gold_lists, predicted_lists, output_dict=True, zero_division=0, **options
        )
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    scores = {
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
    }
    for name, row in report.items():
        if not name.endswith(" avg"):
            scores[f"f1_{name}"] = float(row["f1-score"])
            scores[f"precision_{name}"] = float(row["precision"])
            scores[f"recall_{name}"] = float(row["recall"])
    scores["token_accuracy"] = token_accuracy(gold_lists, predicted_lists)
    return scores


def token_accuracy(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    """The share of words whose predicted tag equals the gold tag."""
    total = sum(len(tags) for tags in gold)
    correct = sum(
        g == p
        for gold_tags, pred_tags in zip(gold, predicted, strict=True)
        for g, p in zip(gold_tags, pred_tags, strict=True)
    )
    return correct / total if total else 0.0


def char_span_scores(
    gold: Sequence[Iterable[tuple[int, int, str]]], predicted: Sequence[Iterable[tuple[int, int, str]]]
) -> dict[str, float]:
    """Micro precision/recall/F1 and per-type scores over entities ``(start, end, type)`` in
    characters, per text: an entity counts when its offsets and type match exactly. The keys of
    ``ner_scores`` (without token accuracy); on word-aligned entities the numbers are seqeval's."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold texts but {len(predicted)} predicted")
    counts: dict[str, list[int]] = {}  # type -> [true positives, gold, predicted]
    for index, (gold_spans, predicted_spans) in enumerate(zip(gold, predicted, strict=True)):
        gold_set = {(index, *span) for span in gold_spans}
        predicted_set = {(index, *span) for span in predicted_spans}
        for entities, column in ((gold_set & predicted_set, 0), (gold_set, 1), (predicted_set, 2)):
            for entity in entities:
                counts.setdefault(entity[3], [0, 0, 0])[column] += 1
    scores = _precision_recall_f1(*(sum(c[i] for c in counts.values()) for i in range(3)), "")
    for name in sorted(counts):
        scores.update(_precision_recall_f1(*counts[name], f"_{name}"))
    return scores


def _precision_recall_f1(correct: int, gold: int, predicted: int, suffix: str) -> dict[str, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {f"precision{suffix}": precision, f"recall{suffix}": recall, f"f1{suffix}": f1}
