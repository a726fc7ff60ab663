"""Sentence classification: logits -> what they say (a label and probabilities, a score, or the
labels over their thresholds); pure, no Lightning. The one decoding of predict, validate, test and
the plain predictor (``tasks.predictor``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..metrics.multilabel import predicted


@dataclass
class Classified:
    """One example's prediction: its logits (kept for scoring) and what they say."""

    logits: torch.Tensor  # [num_labels], or a scalar score for regression
    label: str | None = None
    probabilities: dict[str, float] | None = None
    score: float | None = None  # regression
    labels: dict[str, float] | None = None  # multi-label: each label over its threshold, its probability


def split_logits(outputs: torch.Tensor, batch: dict[str, Any]) -> list[tuple[int, int, torch.Tensor]]:
    """(example index, feature index, logits) for each row of a batch, on the CPU."""
    logits = outputs.detach().float().cpu()
    rows = zip(batch["example"].tolist(), batch["feature_index"].tolist(), logits, strict=True)
    return [(example, feature, row) for example, feature, row in rows]


def classify(
    logits: torch.Tensor,
    label_names: Sequence[str] | None,
    regression: bool = False,
    thresholds: torch.Tensor | None = None,
    threshold: torch.Tensor | float | None = None,
) -> Classified:
    """One example's logits [num_labels] (a scalar for regression) decoded. ``thresholds`` [L]:
    multi-label's per-label thresholds (a sigmoid per label); ``threshold``: a binary task's tuned
    threshold on label 1's probability (None: the most probable label)."""
    if regression:
        return Classified(logits, score=round(float(logits), 6))
    if thresholds is not None:
        probabilities = logits.sigmoid()
        chosen = predicted(probabilities, thresholds).tolist()
        rounded = [round(float(v), 6) for v in probabilities]
        over = sorted((i for i, yes in enumerate(chosen) if yes), key=lambda i: -rounded[i])
        return Classified(
            logits,
            probabilities=dict(zip(label_names, rounded)),
            labels={label_names[i]: rounded[i] for i in over},
        )
    probabilities = logits.softmax(-1)
    if threshold is not None:
        label_id = int(probabilities[1] >= threshold)
    else:
        label_id = int(probabilities.argmax())
    return Classified(
        logits,
        label=label_names[label_id],
        probabilities={name: round(float(v), 6) for name, v in zip(label_names, probabilities)},
    )
