"""GLUE metrics as GLUE defines them, on torch tensors, through torchmetrics' functional API.

Names (the keys a module logs as ``val/<name>``): ``accuracy``; ``f1`` (of the positive class,
label id 1 = GLUE's "1", for MRPC and QQP); ``mcc`` (Matthews correlation, CoLA); ``pearson`` and
``spearman`` (STS-B). A correlation is undefined when the predictions (or labels) are constant:
it is then NaN, as scipy reports it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

from torch import Tensor
from torchmetrics.functional import pearson_corrcoef, spearman_corrcoef
from torchmetrics.functional.classification import (
    binary_f1_score,
    multiclass_accuracy,
    multiclass_matthews_corrcoef,
)

from ..data.glue import TaskSpec, get_task

METRIC_NAMES = ("accuracy", "f1", "mcc", "pearson", "spearman")


def _class_ids(predictions: Tensor) -> Tensor:
    """Class ids from ids [N] or from logits/probabilities [N, C]."""
    return predictions.argmax(dim=-1) if predictions.dim() == 2 else predictions.long()


def _scores(values: Tensor) -> Tensor:
    """Regression scores [N] (a trailing dimension of 1 is dropped), in float64 for stable sums."""
    return values.reshape(-1).double()


def _num_classes(predictions: Tensor, labels: Tensor) -> int:
    return int(max(predictions.max().item(), labels.max().item())) + 1


def accuracy(predictions: Tensor, labels: Tensor, num_classes: int | None = None) -> float:
    """Fraction of predictions equal to their label."""
    preds, labels = _class_ids(predictions), labels.long()
    num_classes = num_classes or _num_classes(preds, labels)
    return multiclass_accuracy(preds, labels, num_classes=num_classes, average="micro").item()


def f1(predictions: Tensor, labels: Tensor, positive: int = 1) -> float:
    """F1 of class ``positive`` (0 when it is never predicted nor present)."""
    preds, labels = _class_ids(predictions), labels.long()
    return binary_f1_score((preds == positive).long(), (labels == positive).long()).item()


def mcc(predictions: Tensor, labels: Tensor, num_classes: int | None = None) -> float:
    """Matthews correlation coefficient (0 when all predictions are one class, as sklearn gives)."""
    preds, labels = _class_ids(predictions), labels.long()
    if preds.unique().numel() < 2 or labels.unique().numel() < 2:
        # The correlation is 0/0 here. GLUE scored with sklearn, which gives 0; torchmetrics gives
        # a limit value instead (0.18 for all-"1" predictions on a 3:2 set), which would flatter
        # a CoLA model that has learnt only the majority class.
        return 0.0
    num_classes = num_classes or max(2, _num_classes(preds, labels))
    return multiclass_matthews_corrcoef(preds, labels, num_classes=num_classes).item()


def _correlation(function: Callable[[Tensor, Tensor], Tensor], predictions: Tensor, labels: Tensor) -> float:
    with warnings.catch_warnings():
        # torchmetrics warns before returning NaN for a constant input; NaN already says it.
        warnings.filterwarnings("ignore", message=".*variance.*close to zero.*")
        return function(_scores(predictions), _scores(labels)).item()


def pearson(predictions: Tensor, labels: Tensor) -> float:
    """Pearson correlation of regression scores."""
    return _correlation(pearson_corrcoef, predictions, labels)


def spearman(predictions: Tensor, labels: Tensor) -> float:
    """Spearman rank correlation (tied values share their average rank)."""
    return _correlation(spearman_corrcoef, predictions, labels)


def compute_metrics(
    names: Sequence[str], predictions: Tensor, labels: Tensor, num_classes: int | None = None
) -> dict[str, float]:
    """The named metrics of ``predictions`` against ``labels``, as plain floats.

    ``predictions``: class ids [N] or logits [N, C] for classification, scores [N] or [N, 1] for
    regression; ``labels``: class ids or scores [N].
    """
    predictions, labels = predictions.detach().cpu(), labels.detach().cpu()
    if labels.numel() == 0:
        raise ValueError("no examples to score")
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    if num_classes is None and predictions.dim() == 2 and predictions.shape[-1] > 1:
        num_classes = predictions.shape[-1]
    functions: dict[str, Callable[[], float]] = {
        "accuracy": lambda: accuracy(predictions, labels, num_classes),
        "f1": lambda: f1(predictions, labels),
        "mcc": lambda: mcc(predictions, labels, num_classes),
        "pearson": lambda: pearson(predictions, labels),
        "spearman": lambda: spearman(predictions, labels),
    }
    unknown = [name for name in names if name not in functions]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {', '.join(METRIC_NAMES)}")
    return {name: functions[name]() for name in names}


def glue_metrics(task: str | TaskSpec, predictions: Tensor, labels: Tensor) -> dict[str, float]:
    """A GLUE task's metrics (``TaskSpec.metrics``), e.g. ``{"f1": .., "accuracy": ..}`` for MRPC."""
    spec = get_task(task)
    num_classes = None if spec.is_regression else spec.num_labels
    return compute_metrics(spec.metrics, predictions, labels, num_classes)
