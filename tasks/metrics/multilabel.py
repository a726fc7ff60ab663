"""Multi-label classification metrics and per-label decision thresholds, on plain tensors.

An example has any number of labels (a 0/1 row of ``gold``); a label is predicted when its
probability is at least its threshold. Names (logged as ``<prefix>/<name>``): ``f1_micro`` (F1 of
all label decisions pooled), ``f1_macro`` (the mean of the per-label F1s), ``exact_match`` (the
share of examples whose predicted label set is exactly the gold one), and per label
``precision/<label>``, ``recall/<label>``, ``f1/<label>``. An F1 (precision, recall) whose
denominator is 0 is 0, as sklearn's ``zero_division=0`` gives.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

DEFAULT_THRESHOLD = 0.5  # a label the validation set never shows keeps the sigmoid's even odds


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1), torch.zeros_like(numerator))


def predicted(probabilities: Tensor, thresholds: Tensor) -> Tensor:
    """[N, L] booleans: each label whose probability reaches its threshold."""
    return probabilities >= thresholds


def multilabel_metrics(
    probabilities: Tensor, gold: Tensor, thresholds: Tensor, label_names: Sequence[str]
) -> dict[str, float]:
    """The metrics above for ``probabilities`` [N, L] against 0/1 ``gold`` [N, L] at ``thresholds`` [L]."""
    decided, truth = predicted(probabilities, thresholds), gold.bool()
    tp = (decided & truth).sum(0).double()
    fp = (decided & ~truth).sum(0).double()
    fn = (~decided & truth).sum(0).double()
    per_label_f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    values = {
        "f1_micro": _ratio(2 * tp.sum(), 2 * tp.sum() + fp.sum() + fn.sum()).item(),
        "f1_macro": per_label_f1.mean().item(),
        "exact_match": (decided == truth).all(1).double().mean().item(),
    }
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    for i, name in enumerate(label_names):
        values[f"precision/{name}"] = precision[i].item()
        values[f"recall/{name}"] = recall[i].item()
        values[f"f1/{name}"] = per_label_f1[i].item()
    return values


def best_threshold(probabilities: Tensor, gold: Tensor) -> float:
    """The threshold maximising F1 of one label (``probabilities`` and 0/1 ``gold`` [N]).

    Predicting the k most probable examples positive gives F1 = 2 TP_k / (k + P); only cuts between
    two different probabilities are possible, and the threshold is the midpoint of the cut, so that
    a slightly different probability on another machine decides the same way. Ties in F1 go to
    the threshold nearest 0.5; a label with no positive example keeps ``DEFAULT_THRESHOLD``.
    """
    positives = float(gold.sum())
    if positives == 0:
        return DEFAULT_THRESHOLD
    order = torch.argsort(probabilities, descending=True, stable=True)
    scores, hits = probabilities[order].double(), gold[order].double()
    true_positives = torch.cumsum(hits, 0)
    k = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    f1 = 2 * true_positives / (k + positives)
    below = torch.cat([scores[1:], scores.new_zeros(1)])  # the next probability down (0 past the end)
    cuts = torch.cat([scores[:-1] > scores[1:], torch.tensor([True])])  # k may end a run of equal scores
    thresholds = (scores + below) / 2
    best = f1[cuts].max()
    candidates = thresholds[cuts][f1[cuts] >= best - 1e-12]
    return float(candidates[(candidates - DEFAULT_THRESHOLD).abs().argmin()])


def best_thresholds(probabilities: Tensor, gold: Tensor) -> Tensor:
    """``best_threshold`` of every label: [L] from ``probabilities`` and ``gold`` [N, L]."""
    values = [best_threshold(probabilities[:, i], gold[:, i]) for i in range(probabilities.shape[1])]
    return torch.tensor(values, dtype=torch.float32)
