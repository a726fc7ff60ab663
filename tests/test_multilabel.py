"""Multi-label classification (``--data.task multilabel``): reading, metrics, thresholds, end to end.

Metrics and thresholds against hand-computed values; the readers on JSONL lists and CSV/TSV
separators; a tiny fit on the shipped sample whose checkpoint alone gives validate the fit's scores
and thresholds, predict's records, and an HF export whose ``pipeline(top_k=None)`` gives predict's
probabilities.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tasks.cli  # noqa: F401  (Lightning's log handler binds to the real stderr; see test_classification_e2e)
from tasks.data.tables import infer_label_names, read_table
from tasks.io import DataError
from tasks.metrics.multilabel import best_threshold, best_thresholds, multilabel_metrics

from .conftest import FAST_TRAINER_ARGS as FAST
from .conftest import ROOT, run_cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

SAMPLE = ROOT / "data" / "multilabel"
NAMES = ["LOC", "MISC", "ORG", "PER"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- metrics and thresholds ---------------------------------------------------------------------


def test_metrics_equal_hand_computed_values():
    probabilities = torch.tensor([[0.9, 0.2], [0.6, 0.7], [0.1, 0.4]])
    gold = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    values = multilabel_metrics(probabilities, gold, torch.tensor([0.5, 0.3]), ["a", "b"])
    # predicted: {a}, {a, b}, {b}.  a: TP 1, FP 1, FN 1.  b: TP 2, FP 0, FN 0.
    assert values["precision/a"] == pytest.approx(0.5) and values["recall/a"] == pytest.approx(0.5)
    assert values["f1/a"] == pytest.approx(0.5) and values["f1/b"] == pytest.approx(1.0)
    assert values["f1_macro"] == pytest.approx(0.75)
    assert values["f1_micro"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))  # TP 3, FP 1, FN 1
    assert values["exact_match"] == pytest.approx(1 / 3)  # the second example only


def test_a_label_never_predicted_nor_present_scores_zero_not_nan():
    values = multilabel_metrics(
        torch.tensor([[0.1, 0.9]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0.5, 0.5]), "ab"
    )
    assert values["f1/a"] == 0.0 and values["precision/a"] == 0.0 and values["f1_micro"] == 1.0


def test_threshold_maximises_f1_at_the_midpoint_of_the_cut():
    # Top k positive: k=1 F1 .5, k=2 .4, k=3 .667, k=4 .857, k=5 .75 -> cut between 0.4 and 0.2.
    probabilities = torch.tensor([0.2, 0.9, 0.4, 0.8, 0.6])
    gold = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0])
    assert best_threshold(probabilities, gold) == pytest.approx(0.3)
    # Equal probabilities cannot be cut apart; all positive: half the lowest probability.
    assert best_threshold(torch.tensor([0.9, 0.9, 0.1]), torch.tensor([1.0, 1.0, 0.0])) == pytest.approx(0.5)
    assert best_threshold(torch.tensor([0.3, 0.2]), torch.tensor([1.0, 1.0])) == pytest.approx(0.1)


def test_a_label_the_validation_set_never_shows_keeps_one_half():
    probabilities = torch.tensor([[0.9, 0.8], [0.1, 0.7]])
    thresholds = best_thresholds(probabilities, torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    assert thresholds.tolist() == pytest.approx([0.5, 0.5])  # a: (0.9 + 0.1) / 2; b: no positive


# -- reading --------------------------------------------------------------------------------------


def test_jsonl_lists_and_csv_separators_read_alike(tmp_path: Path):
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text(
        '{"text": "a", "label": ["x", "y"]}\n{"text": "b", "label": []}\n{"text": "c", "label": ["y", "y"]}\n'
    )
    csv = tmp_path / "train.csv"
    csv.write_text('text,tags\na,"x| y"\nb,\nc,y|y\n')
    from_jsonl = read_table(jsonl, "text", label_column="label", label_separator=",")
    from_csv = read_table(csv, "text", label_column="tags", label_separator="|")
    assert [e.label for e in from_jsonl] == [e.label for e in from_csv] == [("x", "y"), (), ("y",)]
    assert infer_label_names(from_jsonl) == ["x", "y"]


@pytest.mark.parametrize(
    "content, problem",
    [
        ('{"text": "a", "label": ["x"]}\n{"text": "b", "label": ["z"]}\n', "2: label 'z' is not one of x, y"),
        ('{"text": "a", "label": "x"}\n', "1: labels must be a list of names, found str"),
        ('{"text": "a", "label": ["x", ""]}\n', "1: an empty label name"),
    ],
)
def test_bad_label_lists_name_the_line(tmp_path: Path, content: str, problem: str):
    path = tmp_path / "dev.jsonl"
    path.write_text(content)
    with pytest.raises(DataError) as raised:
        read_table(path, "text", label_column="label", label_names=["x", "y"], label_separator=",")
    assert str(raised.value).startswith(f"{path}:{problem}")


# -- end to end -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory, mixing_bert_dir: Path) -> Path:
    run_dir = tmp_path_factory.mktemp("multilabel")
    code = run_cli(
        "fit",
        "--config",
        ROOT / "configs" / "multilabel.yaml",
        "--data.train_file",
        SAMPLE / "train.jsonl",
        "--data.validation_file",
        SAMPLE / "dev.jsonl",
        "--data.test_file",
        "null",
        "--data.predict_file",
        "null",
        "--model.pretrained",
        mixing_bert_dir,
        "--model.learning_rate",
        "1e-3",
        "--trainer.max_epochs",
        "2",
        "--trainer.limit_train_batches",
        "4",
        "--trainer.default_root_dir",
        run_dir,
        *FAST,
    )
    assert code == 0
    return run_dir


def test_the_checkpoint_alone_validates_as_the_fit_did(multilabel_run: Path, tmp_path: Path):
    fitted = json.loads((multilabel_run / "metrics.json").read_text())
    assert {"val/f1_micro", "val/f1_macro", "val/exact_match"} <= set(fitted)
    assert {f"val/{m}/{n}" for m in ("precision", "recall", "f1", "threshold") for n in NAMES} <= set(fitted)
    ckpt = multilabel_run / "checkpoints" / "best.ckpt"
    thresholds = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]["thresholds"]
    assert thresholds.tolist() == pytest.approx([fitted[f"val/threshold/{n}"] for n in NAMES])
    assert thresholds.tolist() != pytest.approx([0.5] * 4)  # chosen on the validation set

    args = ["validate", "--ckpt_path", ckpt, "--data.validation_file", SAMPLE / "dev.jsonl"]
    assert run_cli(*args, "--trainer.default_root_dir", tmp_path, *FAST) == 0
    validated = json.loads((tmp_path / "eval" / "validation-dev" / "metrics.json").read_text())
    for key in ("val/f1_micro", "val/f1_macro", "val/exact_match", "val/loss", "val/threshold/PER"):
        assert validated[key] == pytest.approx(fitted[key]), key  # the stored thresholds, not new ones


def test_predict_lists_every_label_over_its_threshold(multilabel_run: Path, tmp_path: Path):
    ckpt = multilabel_run / "checkpoints" / "best.ckpt"
    out = tmp_path / "predictions.jsonl"
    args = [
        "predict",
        "--ckpt_path",
        ckpt,
        "--data.predict_file",
        SAMPLE / "dev.jsonl",
        "--data.predictions_file",
        out,
    ]
    assert run_cli(*args, "--trainer.default_root_dir", tmp_path, *FAST) == 0
    thresholds = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]["thresholds"].tolist()
    records = read_jsonl(out)
    assert len(records) == len(read_jsonl(SAMPLE / "dev.jsonl"))
    for record in records:
        assert set(record["probabilities"]) == set(NAMES)
        over = {n for n, t in zip(NAMES, thresholds) if record["probabilities"][n] >= t - 1e-6}
        assert set(record["labels"]) == over
        assert all(record["labels"][n] == record["probabilities"][n] for n in over)
        assert list(record["labels"].values()) == sorted(record["labels"].values(), reverse=True)


def test_a_label_not_seen_in_training_is_a_one_line_error(multilabel_run: Path, tmp_path: Path, capfd):
    dev = tmp_path / "dev.jsonl"
    dev.write_text('{"text": "Oslo", "label": ["LOC"]}\n{"text": "x", "label": ["PER", "DATE"]}\n')
    ckpt = multilabel_run / "checkpoints" / "best.ckpt"
    capfd.readouterr()
    args = [
        "validate",
        "--ckpt_path",
        ckpt,
        "--data.validation_file",
        dev,
        "--trainer.default_root_dir",
        tmp_path,
    ]
    assert run_cli(*args, *FAST) == 2
    assert f"{dev}:2: label 'DATE' is not one of LOC, MISC, ORG, PER" in capfd.readouterr().err


def test_hf_export_pipeline_gives_predicts_probabilities(multilabel_run: Path, tmp_path: Path):
    from transformers import pipeline

    ckpt = multilabel_run / "checkpoints" / "best.ckpt"
    directory = tmp_path / "hf"
    assert run_cli("export", "--ckpt_path", ckpt, "--format", "hf", "--output", directory) == 0
    config = json.loads((directory / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    texts = tmp_path / "texts.txt"
    sentences = [r["text"] for r in read_jsonl(SAMPLE / "dev.jsonl")[:4]]
    texts.write_text("\n".join(sentences) + "\n")
    out = tmp_path / "predictions.jsonl"
    args = ["predict", "--ckpt_path", ckpt, "--data.predict_file", texts, "--data.predictions_file", out]
    assert run_cli(*args, "--trainer.default_root_dir", tmp_path / "run", *FAST) == 0
    theirs = pipeline("text-classification", model=str(directory), top_k=None)(sentences)
    for mine, scores in zip(read_jsonl(out), theirs, strict=True):
        probabilities = {s["label"]: s["score"] for s in scores}
        assert probabilities == pytest.approx(mine["probabilities"], abs=1e-4)  # sigmoids, not a softmax


def test_onnx_export_refuses_tuned_thresholds(multilabel_run: Path, tmp_path: Path, capfd):
    ckpt = multilabel_run / "checkpoints" / "best.ckpt"
    capfd.readouterr()
    assert run_cli("export", "--ckpt_path", ckpt, "--format", "onnx", "--output", tmp_path / "onnx") == 2
    assert "thresholds were tuned and are not carried by an ONNX export" in capfd.readouterr().err
    assert not (tmp_path / "onnx").exists()
