"""``--model.class_weights balanced|[w1, w2, ...]``: loss weights for imbalanced labels, checked once.

``balanced`` weighs class c by ``N / (C * n_c)`` (scikit-learn's ``class_weight="balanced"``): each
class then carries the same total weight in the loss. For multi-label the weight is BCE's
``pos_weight`` of each label, ``(N - n_c) / n_c``: its positives weigh as much as its negatives.
A class with no training example (for multi-label, or on every one) gets weight 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .io import UserError

BALANCED = "balanced"


def check_class_weights(option: str | Sequence[float] | None, num_labels: int, what: str) -> None:
    """A UserError naming ``--model.class_weights`` unless ``option`` is None, ``balanced``, or
    ``num_labels`` positive numbers; ``what`` names the task when weights do not apply (regression)."""
    if option is None or option == BALANCED:
        return
    if isinstance(option, str):
        raise UserError(f"--model.class_weights must be 'balanced' or a list of numbers, not {option!r}")
    if what:
        raise UserError(f"--model.class_weights applies to classification, not to {what}")
    if len(option) != num_labels or not all(isinstance(w, int | float) and w > 0 for w in option):
        raise UserError(
            f"--model.class_weights needs {num_labels} positive numbers (one per label), not {list(option)}"
        )


def balanced_weights(counts: torch.Tensor, total: int, multilabel: bool = False) -> torch.Tensor:
    """The ``balanced`` weights of classes seen ``counts`` [C] times among ``total`` examples."""
    counts = counts.double()
    seen = counts > 0
    if multilabel:  # a label on every example would get pos_weight 0: it keeps 1
        seen &= counts < total
        weights = (total - counts) / counts.clamp(min=1)
    else:
        weights = total / (len(counts) * counts.clamp(min=1))
    return torch.where(seen, weights, torch.ones_like(weights)).float()
