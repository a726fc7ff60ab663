"""NER from annotation-tool files through the CLI with a tiny model: fit on the shipped doccano
sample, then test and predict from the checkpoint alone; the test scores equal the
character-level scores of the written predictions against the gold file, and Label Studio
predictions come back as an importable task list."""

import json
from pathlib import Path

import pytest

from tasks.data.spans import read_spans
from tasks.metrics.ner import char_span_scores

from .conftest import FAST_TRAINER_ARGS as FAST
from .conftest import ROOT, run_cli

CONFIG = ROOT / "configs" / "ner.yaml"
NER = ROOT / "data" / "ner"
NO_FILES = ["--data.train_file", "null", "--data.validation_file", "null", "--data.test_file", "null"]


def evaluation_metrics(run_dir: Path) -> dict:
    (path,) = (run_dir / "eval").glob("*/metrics.json")
    return json.loads(path.read_text())


def test_doccano_fit_test_predict_and_labelstudio_predictions(tiny_bert_dir, tmp_path):
    run_dir = tmp_path / "run"
    fit = [
        "fit",
        "--config",
        CONFIG,
        "--trainer.default_root_dir",
        run_dir,
        *FAST,
        "--data.format",
        "doccano",
    ]
    fit += [
        "--data.train_file",
        NER / "train.doccano.jsonl",
        "--data.validation_file",
        NER / "dev.doccano.jsonl",
    ]
    fit += ["--data.test_file", "null", "--data.predict_file", "null", "--data.cache_dir", tmp_path / "cache"]
    fit += ["--model.pretrained", tiny_bert_dir, "--model.learning_rate", "1e-3", "--data.batch_size", "8"]
    assert run_cli(*fit, "--trainer.limit_train_batches", "8", "--trainer.max_epochs", "1") == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["val/f1"] <= 1.0 and "val/f1_PER" in metrics and "val/token_accuracy" in metrics
    checkpoint = run_dir / "checkpoints" / "best.ckpt"

    # the checkpoint alone: test on the doccano test file, predict on it, score the written file
    common = ["--config", CONFIG, "--ckpt_path", checkpoint, *FAST, *NO_FILES, "--data.format", "doccano"]
    test_file = NER / "test.doccano.jsonl"
    evaluated = tmp_path / "evaluated"
    test = ["test", *common, "--data.test_file", test_file, "--data.predict_file", "null"]
    assert run_cli(*test, "--trainer.default_root_dir", evaluated) == 0
    scores = evaluation_metrics(evaluated)
    written = tmp_path / "test.predicted.jsonl"
    predict = ["predict", *common, "--data.predict_file", test_file, "--data.predictions_file", written]
    assert run_cli(*predict, "--trainer.default_root_dir", tmp_path / "predicted") == 0
    source = [json.loads(line) for line in test_file.read_text().splitlines()]
    records = [json.loads(line) for line in written.read_text().splitlines()]
    assert [r.keys() for r in records] == [r.keys() for r in source]  # doccano in, doccano out
    assert [r["text"] for r in records] == [r["text"] for r in source]
    gold = read_spans(test_file, "doccano").gold_spans
    predicted = read_spans(written, "doccano").gold_spans
    assert sum(map(len, predicted)) > 0  # not a vacuous 0 = 0
    for name, value in char_span_scores(gold, predicted).items():
        assert scores[f"test/{name}"] == pytest.approx(value, abs=1e-6), name

    # Label Studio in, Label Studio predictions out (a JSON list of tasks, importable as pre-annotations)
    tasks_file = NER / "dev.labelstudio.json"
    out = tmp_path / "dev.predicted.json"
    labelstudio = ["predict", "--config", CONFIG, "--ckpt_path", checkpoint, *FAST, *NO_FILES]
    labelstudio += [
        "--data.format",
        "labelstudio",
        "--data.predict_file",
        tasks_file,
        "--data.predictions_file",
        out,
    ]
    assert run_cli(*labelstudio, "--trainer.default_root_dir", tmp_path / "predicted-ls") == 0
    tasks = json.loads(out.read_text())
    assert [t["data"] for t in tasks] == [t["data"] for t in json.loads(tasks_file.read_text())]
    again = read_spans(out, "labelstudio", source="predictions")
    for record, spans in zip(again.records, again.gold_spans, strict=True):
        assert all(
            record.text[s:e] == v["value"]["text"]
            for (s, e, _), v in zip(spans, record.raw["predictions"][0]["result"], strict=True)
        )


def test_misaligned_spans_error_stops_fit_with_one_line(tiny_bert_dir, tmp_path, capsys):
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"text": "Angela Merkel spoke .", "label": [[0, 5, "PER"]]}) + "\n")
    fit = [
        "fit",
        "--config",
        CONFIG,
        "--trainer.default_root_dir",
        tmp_path / "run",
        *FAST,
        "--data.format",
        "doccano",
    ]
    fit += ["--data.train_file", train, "--data.validation_file", train, "--data.test_file", "null"]
    fit += [
        "--data.predict_file",
        "null",
        "--model.pretrained",
        tiny_bert_dir,
        "--data.misaligned_spans",
        "error",
    ]
    assert run_cli(*fit) == 2
    err = capsys.readouterr().err
    assert f"{train}:1: span [0, 5) PER 'Angel' does not start and end on word boundaries" in err


@pytest.mark.parametrize(
    ("predict_file", "predict_format", "as_spans"),
    [("new.jsonl", "auto", True), ("notes.txt", "auto", False), ("new.jsonl", "text", False)],
)
def test_which_predict_files_are_read_as_annotation_files(predict_file, predict_format, as_spans):
    from tasks.tagging import TaggingDataModule

    files = TaggingDataModule(
        format="doccano", predict_file=predict_file, predict_format=predict_format
    ).files
    assert files.reads_spans("predict", predict_file) is as_spans and files.reads_spans("test", "dev.jsonl")
    assert not TaggingDataModule(predict_file=predict_file).files.reads_spans("predict", predict_file)
