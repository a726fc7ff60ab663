"""GLUE metrics against hand-computed values and against the scorers GLUE itself used."""

from __future__ import annotations

import math

import pytest
import torch

from tasks.metrics.glue import accuracy, compute_metrics, f1, glue_metrics, mcc, pearson, spearman

# TP = 2 (ids 0, 3), TN = 1 (id 1), FP = 1 (id 2), FN = 1 (id 4).
PREDS = torch.tensor([1, 0, 1, 1, 0])
LABELS = torch.tensor([1, 0, 0, 1, 1])


def test_accuracy_f1_mcc_by_hand():
    assert accuracy(PREDS, LABELS) == pytest.approx(3 / 5)
    assert f1(PREDS, LABELS) == pytest.approx(2 / 3)  # precision 2/3, recall 2/3
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 1) / sqrt(3*3*2*2)
    assert mcc(PREDS, LABELS) == pytest.approx(1 / 6)


def test_f1_is_of_the_positive_class():
    # Class 0 has F1 = 2*1/(2*1+1+1) = 1/2 here; class 1 has 2/3.
    assert f1(PREDS, LABELS, positive=0) == pytest.approx(1 / 2)


def test_degenerate_predictions():
    constant = torch.ones(5, dtype=torch.long)
    assert mcc(constant, LABELS) == 0.0  # 0/0: sklearn's (GLUE's) convention, not torchmetrics' 0.18
    assert mcc(torch.zeros(5, dtype=torch.long), LABELS) == 0.0
    assert mcc(LABELS, torch.ones(5, dtype=torch.long)) == 0.0
    assert f1(torch.zeros(5, dtype=torch.long), LABELS) == 0.0  # the positive class is never predicted
    assert math.isnan(pearson(torch.ones(4), torch.tensor([1.0, 2.0, 3.0, 4.0])))


def test_logits_are_reduced_by_argmax():
    logits = torch.tensor([[0.1, 2.0], [3.0, -1.0], [0.0, 0.5], [-2.0, 1.0], [1.0, 0.0]])
    assert compute_metrics(["accuracy", "f1"], logits, LABELS) == pytest.approx(
        {"accuracy": 0.6, "f1": 2 / 3}
    )


def test_correlations_by_hand():
    preds, labels = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([2.0, 4.0, 5.0, 9.0])
    # deviations (-1.5, -.5, .5, 1.5) and (-3, -1, 0, 4): cov 11, sums of squares 5 and 26
    assert pearson(preds, labels) == pytest.approx(11 / math.sqrt(5 * 26))
    assert spearman(preds, labels) == pytest.approx(1.0)  # monotone
    # Tied values share their average rank: (1, 2.5, 2.5, 4) against (1, 3, 2, 4) -> 4.5 / sqrt(4.5 * 5)
    tied = spearman(torch.tensor([1.0, 2.0, 2.0, 3.0]), torch.tensor([1.0, 3.0, 2.0, 4.0]))
    assert tied == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    # A [N, 1] regression output is accepted as it comes from the head.
    assert pearson(preds[:, None], labels) == pytest.approx(11 / math.sqrt(130))


def test_glue_metrics_per_task():
    assert glue_metrics("mrpc", PREDS, LABELS) == pytest.approx({"f1": 2 / 3, "accuracy": 0.6})
    assert glue_metrics("qqp", PREDS, LABELS).keys() == {"f1", "accuracy"}
    assert glue_metrics("cola", PREDS, LABELS) == pytest.approx({"mcc": 1 / 6, "accuracy": 0.6})
    assert glue_metrics("sst2", PREDS, LABELS) == pytest.approx({"accuracy": 0.6})
    mnli = glue_metrics("mnli", torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2]))
    assert mnli == pytest.approx({"accuracy": 0.75})
    stsb = glue_metrics("stsb", torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([2.0, 4.0, 5.0, 9.0]))
    assert stsb == pytest.approx({"pearson": 11 / math.sqrt(130), "spearman": 1.0})


def test_bad_calls():
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metrics(["bleu"], PREDS, LABELS)
    with pytest.raises(ValueError, match="5 predictions but 4 labels"):
        compute_metrics(["accuracy"], PREDS, LABELS[:4])
    with pytest.raises(ValueError, match="no examples"):
        compute_metrics(["accuracy"], PREDS[:0], LABELS[:0])


def test_equal_to_the_scorers_glue_used():
    # GLUE's reference scoring used scikit-learn (F1, MCC) and scipy (Pearson, Spearman).
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    stats = pytest.importorskip("scipy.stats")
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (500,), generator=generator)
    preds = torch.where(torch.rand(500, generator=generator) < 0.8, labels, 1 - labels)
    assert f1(preds, labels) == pytest.approx(sklearn_metrics.f1_score(labels, preds), abs=1e-6)
    assert mcc(preds, labels) == pytest.approx(sklearn_metrics.matthews_corrcoef(labels, preds), abs=1e-6)
    assert accuracy(preds, labels) == pytest.approx(sklearn_metrics.accuracy_score(labels, preds), abs=1e-6)
    gold = torch.randint(0, 26, (500,), generator=generator).double() / 5  # STS-B-like, many ties
    scores = gold + torch.randn(500, generator=generator, dtype=torch.float64)
    assert pearson(scores, gold) == pytest.approx(stats.pearsonr(scores, gold)[0], abs=1e-9)
    assert spearman(scores.round(decimals=1), gold) == pytest.approx(
        stats.spearmanr(scores.round(decimals=1), gold)[0], abs=1e-6
    )
