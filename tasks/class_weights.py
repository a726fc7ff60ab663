"""``--model.class_weights balanced|[w1, w2, ...]``: loss weights for imbalanced labels, checked once.

``balanced`` weighs class c by ``N / (C * n_c)`` (scikit-learn's ``class_weight="balanced"``): each
class then carries the same total weight in the loss. For tagging, N counts labelled words and the
classes are the tags, so ``O`` (most words) is down-weighted and each entity tag weighs up. For
multi-label the weight is BCE's ``pos_weight`` of each label, ``(N - n_c) / n_c``: its positives
weigh as much as its negatives. A class with no training example (for multi-label, or on every
one) gets weight 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
        raise UserError(f"--model.class_weights applies to classification and tagging, not to {what}")
    if len(option) != num_labels or not all(isinstance(w, int | float) and w > 0 for w in option):
        raise UserError(
            f"--model.class_weights needs {num_labels} positive numbers (one per label), not {list(option)}"
        )


def weights_buffer(
    option: str | Sequence[float] | None, num_labels: int, what: str = ""
) -> torch.Tensor | None:
    """The checked option as the module's ``class_weights`` buffer: None when unset (then it is not
    in the checkpoint), ones until fit fills in ``balanced``, else the given weights. A buffer, so
    that validate/test/predict of the checkpoint compute the same loss."""
    check_class_weights(option, num_labels, what)
    if option is None:
        return None
    if option == BALANCED:
        return torch.ones(num_labels)
    return torch.tensor(option, dtype=torch.float)


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


def fill_balanced(module: Any, stage: str, multilabel: bool = False) -> None:
    """At fit, ``balanced`` becomes weights from the training label counts the data module reports
    (they are then in the checkpoint's buffer, so a later validate needs no train file)."""
    datamodule = module.trainer.datamodule
    if stage == "fit" and module.hparams.get("class_weights") == BALANCED and datamodule is not None:
        counts, total = datamodule.train_label_counts()
        module.class_weights.copy_(balanced_weights(torch.tensor(counts), total, multilabel))
