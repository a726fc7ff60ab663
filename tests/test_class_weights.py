"""``--model.class_weights`` and ``--model.tune_threshold`` for classification.

The balanced weights against hand-computed values, the weighted losses against their formulas, bad
options as one-line errors, and a tiny SST-2 fit whose checkpoint alone carries the weights and the
tuned threshold: validate scores as the fit did, predict decides by the stored threshold.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import tasks.cli  # noqa: F401  (Lightning's log handler binds to the real stderr; see test_classification_e2e)
from tasks.class_weights import balanced_weights, check_class_weights
from tasks.classification import SequenceClassifier
from tasks.io import UserError

from .conftest import FAST_TRAINER_ARGS as FAST
from .conftest import ROOT, run_cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

SST2 = ROOT / "data" / "glue" / "SST-2"


def test_balanced_weights_equal_hand_computed_values():
    assert balanced_weights(torch.tensor([3, 1]), 4).tolist() == pytest.approx([4 / 6, 2.0])
    assert balanced_weights(torch.tensor([3, 0]), 3).tolist() == pytest.approx([0.5, 1.0])  # unseen: 1
    # multi-label pos_weight (N - n) / n; a label on no example or on all of them keeps 1
    assert balanced_weights(torch.tensor([1, 4, 0]), 4, multilabel=True).tolist() == pytest.approx(
        [3.0, 1.0, 1.0]
    )


@pytest.mark.parametrize(
    "option, what, fragment",
    [
        ("often", "", "must be 'balanced' or a list of numbers, not 'often'"),
        ([1.0], "", "needs 2 positive numbers (one per label), not [1.0]"),
        ([1.0, 0.0], "", "needs 2 positive numbers"),
        ([1.0, 2.0], "regression", "applies to classification and tagging, not to regression"),
    ],
)
def test_bad_class_weights_are_user_errors(option, what, fragment):
    with pytest.raises(UserError, match="--model.class_weights") as raised:
        check_class_weights(option, 2, what)
    assert fragment in str(raised.value)


def test_weighted_losses_follow_their_formulas(tiny_bert_dir: Path):
    single = SequenceClassifier(
        pretrained=str(tiny_bert_dir), task="classification", label_names=["a", "b"], class_weights=[1.0, 3.0]
    )
    per_example = [math.log(1 + math.exp(-2)), math.log(2)]  # logits [2, 0] gold a; [0, 0] gold b
    loss = single.loss(torch.tensor([[2.0, 0.0], [0.0, 0.0]]), torch.tensor([0, 1]))
    assert loss.item() == pytest.approx((1 * per_example[0] + 3 * per_example[1]) / 4)

    multi = SequenceClassifier(
        pretrained=str(tiny_bert_dir), task="multilabel", label_names=["a", "b"], class_weights=[4.0, 1.0]
    )
    # logit 0 on both labels; gold a only: a's positive term is weighed 4, b's negative term 1
    loss = multi.loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]))
    assert loss.item() == pytest.approx((4 * math.log(2) + math.log(2)) / 2)


def test_tune_threshold_is_for_binary_tasks(tiny_bert_dir: Path):
    with pytest.raises(UserError, match="--model.tune_threshold applies to binary and multi-label tasks"):
        SequenceClassifier(
            pretrained=str(tiny_bert_dir), task="classification", label_names="abc", tune_threshold=True
        )


def test_the_checkpoint_carries_weights_threshold_and_columns(mixing_bert_dir: Path, tmp_path: Path):
    """SST-2's TSV read as a user's own table (named columns, labels "0"/"1", label 1's F1 as the
    threshold's target): validate and predict from the checkpoint alone read the same columns."""
    run_dir = tmp_path / "run"
    fit = ["fit", "--config", ROOT / "configs" / "sst2.yaml", "--model.pretrained", mixing_bert_dir]
    fit += ["--data.task", "classification", "--data.text_column", "sentence", "--data.label_column", "label"]
    fit += [
        "--model.class_weights",
        "balanced",
        "--model.tune_threshold",
        "true",
        "--model.threshold_metric",
        "f1",
        "--model.learning_rate",
        "1e-3",
    ]
    fit += [
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "3",
        "--trainer.default_root_dir",
        run_dir,
    ]
    fit += ["--data.train_file", SST2 / "train.tsv", "--data.validation_file", SST2 / "dev.tsv"]
    assert run_cli(*fit, "--data.test_file", "null", "--data.predict_file", "null", *FAST) == 0
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    labels = [
        line.split("\t")[1] for line in (SST2 / "train.tsv").read_text().splitlines()[1:] if line.strip()
    ]
    counts = [labels.count("0"), labels.count("1")]
    expected = [len(labels) / (2 * n) for n in counts]
    assert state["class_weights"].tolist() == pytest.approx(expected)
    fitted = json.loads((run_dir / "metrics.json").read_text())
    assert state["threshold"].item() == pytest.approx(fitted["val/threshold"])

    common = ["--ckpt_path", ckpt, "--trainer.default_root_dir", tmp_path / "eval", *FAST]
    assert run_cli("validate", "--data.validation_file", SST2 / "dev.tsv", *common) == 0
    validated = json.loads((tmp_path / "eval" / "eval" / "validation-dev" / "metrics.json").read_text())
    for key in ("val/accuracy", "val/f1", "val/threshold", "val/loss"):
        assert validated[key] == pytest.approx(fitted[key]), key

    out = tmp_path / "predictions.jsonl"
    assert (
        run_cli("predict", "--data.predict_file", SST2 / "dev.tsv", "--data.predictions_file", out, *common)
        == 0
    )
    threshold = state["threshold"].item()
    for record in map(json.loads, out.read_text().splitlines()):
        positive = record["probabilities"]["1"] >= threshold - 1e-6
        assert record["label"] == ("1" if positive else "0")


def test_tagging_weights_scale_each_word_by_its_gold_tag(tiny_bert_dir: Path):
    from tasks.features.tagging import IGNORE_INDEX
    from tasks.tagging import TaggingModule

    module = TaggingModule(
        pretrained=str(tiny_bert_dir), label_names=["O", "B-X", "I-X"], class_weights=[0.5, 2, 2]
    )
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [5.0, 5.0, 5.0]]])  # [1, 3 tokens, 3 tags]
    labels = torch.tensor([[0, 1, IGNORE_INDEX]])  # the third token is a later sub-token: not scored
    o_loss = math.log(1 + 2 * math.exp(-2))  # gold O at logits [2, 0, 0]
    x_loss = math.log(3)  # gold B-X at logits [0, 0, 0]
    loss = module.training_loss(logits, {"labels": labels})
    assert loss.item() == pytest.approx((0.5 * o_loss + 2 * x_loss) / 2.5)


def test_tagging_balanced_weights_come_from_the_train_files_tag_counts(tiny_bert_dir: Path, tmp_path: Path):
    train = ROOT / "data" / "ner" / "train.conll"
    tags = [
        line.split()[-1] for line in train.read_text().splitlines() if line.strip() and "DOCSTART" not in line
    ]
    run_dir = tmp_path / "run"
    fit = ["fit", "--config", ROOT / "configs" / "ner.yaml", "--model.pretrained", tiny_bert_dir]
    fit += [
        "--model.class_weights",
        "balanced",
        "--trainer.max_steps",
        "1",
        "--trainer.limit_val_batches",
        "1",
    ]
    fit += ["--trainer.default_root_dir", run_dir, "--data.test_file", "null", "--data.predict_file", "null"]
    assert run_cli(*fit, *FAST) == 0
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    names = checkpoint["hyper_parameters"]["label_names"]
    expected = [
        len(tags) / (len(names) * max(tags.count(name), 1)) if name in tags else 1.0 for name in names
    ]
    assert checkpoint["state_dict"]["class_weights"].tolist() == pytest.approx(expected)
    assert expected[names.index("O")] == min(expected)  # O, the commonest tag, weighs least


@pytest.mark.parametrize("metric, expected", [(None, 0.5), ("f1", 0.35)])
def test_the_threshold_maximises_the_metric_asked_for(tiny_bert_dir: Path, metric, expected):
    module = SequenceClassifier(
        pretrained=str(tiny_bert_dir),
        task="classification",
        label_names=["0", "1"],
        tune_threshold=True,
        threshold_metric=metric,
    )
    module._tuning = lambda evaluation: True  # as in a fit's validation
    positive = torch.tensor([0.1, 0.2, 0.3, 0.45, 0.4, 0.9], dtype=torch.float64)
    logits = torch.stack([torch.zeros_like(positive), torch.log(positive / (1 - positive))], -1)
    # accuracy is 5/6 at 0.5 and at 0.35 (the tie goes to 0.5); label 1's F1 is 2/3 at 0.5, 0.8 at 0.35
    values = module._score_binary(logits.float(), torch.tensor([0, 0, 0, 0, 1, 1]), evaluation=None)
    assert values["threshold"] == pytest.approx(expected, abs=1e-6)
    assert values["f1"] == pytest.approx(0.8 if metric else 2 / 3)


def test_threshold_metric_must_be_one_of_a_binary_tasks_metrics(tiny_bert_dir: Path):
    with pytest.raises(UserError, match="--model.threshold_metric needs"):
        SequenceClassifier(
            pretrained=str(tiny_bert_dir),
            task="classification",
            label_names=["0", "1"],
            threshold_metric="f1",
        )
    with pytest.raises(UserError, match="not 'recall'"):
        SequenceClassifier(
            pretrained=str(tiny_bert_dir),
            task="classification",
            label_names=["0", "1"],
            tune_threshold=True,
            threshold_metric="recall",
        )
