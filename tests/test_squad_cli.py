"""SQuAD end to end through the CLI on a tiny model: fit, validate, predict, score-squad, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bert_core import load_tokenizer
from tasks.data.squad import read_squad
from tasks.features.qa import QAFeaturizer

from .conftest import ROOT, evaluation_metrics, run_cli

# Short windows so that the sample's paragraphs span several of them.
WINDOWS = ["--data.max_seq_length", "64", "--data.max_query_length", "24", "--data.doc_stride", "24"]
QUICK = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--data.batch_size", "8"]


@pytest.fixture(autouse=True)
def in_repository(monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs name their data files relative to the repository


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_squad_v2_fit_validate_predict_and_score(tmp_path, tiny_bert_dir, fast_trainer_args, capsys):
    run = tmp_path / "fit"
    common = ["--config", "configs/squad_v2.yaml", *WINDOWS, *fast_trainer_args]
    assert (
        run_cli(
            "fit", *common, "--model.pretrained", tiny_bert_dir, *QUICK, "--trainer.default_root_dir", run
        )
        == 0
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert {
        "val/exact_match",
        "val/f1",
        "val/HasAns_exact",
        "val/HasAns_f1",
        "val/NoAns_exact",
        "val/NoAns_f1",
        "val/best_exact",
        "val/best_exact_thresh",
        "val/best_f1",
        "val/best_f1_thresh",
        "val/evaluated_examples",
        "val/total_examples",
        "best_checkpoint",
        "input_lengths",
    } == set(metrics)
    dev = read_squad("data/squad/dev-v2.0.json")
    predictions = json.loads((run / "predictions.json").read_text())
    assert list(predictions) == [e.id for e in dev.examples]
    assert set(json.loads((run / "null_odds.json").read_text())) == set(predictions)
    nbest = json.loads((run / "nbest_predictions.json").read_text())
    assert all(
        entries and entries[0].keys() >= {"text", "probability", "start_logit", "end_logit"}
        for entries in nbest.values()
    )

    # Our scorer on the written files, with the threshold the model used, gives the logged metrics
    # (score-squad prints the official scripts' 0-100; metrics.json is 0-1 like every task's).
    capsys.readouterr()
    assert (
        run_cli(
            "score-squad",
            "data/squad/dev-v2.0.json",
            run / "predictions.json",
            "--na-prob-file",
            run / "null_odds.json",
            "--na-prob-thresh",
            "0.0",
        )
        == 0
    )
    scored = json.loads(capsys.readouterr().out)
    assert scored["exact"] == pytest.approx(100 * metrics["val/exact_match"])
    assert scored["f1"] == pytest.approx(100 * metrics["val/f1"])
    assert scored["best_f1"] == pytest.approx(100 * metrics["val/best_f1"])
    assert scored["NoAns_f1"] == pytest.approx(100 * metrics["val/NoAns_f1"])

    # The .ckpt alone validates (v2.0 comes back from it) and predicts.
    # metrics.json and predictions.json of a fit describe best.ckpt:
    checkpoint = run / "checkpoints" / "best.ckpt"
    assert metrics["best_checkpoint"]["path"] == str(checkpoint)
    again = tmp_path / "validate"
    assert run_cli("validate", *common, "--ckpt_path", checkpoint, "--trainer.default_root_dir", again) == 0
    numbers = {k: v for k, v in metrics.items() if k not in ("best_checkpoint", "input_lengths")}
    validated = json.loads((again / "eval" / "validation" / "metrics.json").read_text())
    # the same dev file measured again (validate featurises no train file)
    assert validated.pop("input_lengths") == {"validation": metrics["input_lengths"]["validation"]}
    assert validated == pytest.approx(numbers)
    assert (again / "eval" / "validation" / "predictions.json").read_text() == (
        run / "predictions.json"
    ).read_text()

    out = tmp_path / "predict" / "dev.jsonl"
    assert (
        run_cli(
            "predict",
            *common,
            "--ckpt_path",
            checkpoint,
            "--data.predict_file",
            "data/squad/dev-v2.0.json",
            "--data.predictions_file",
            out,
            "--trainer.default_root_dir",
            tmp_path / "predict",
        )
        == 0
    )
    records = read_jsonl(out)
    assert [r["id"] for r in records] == [e.id for e in dev.examples]
    assert {r["id"]: r["answer"] for r in records} == predictions  # same windows, same decoding
    for record, example in zip(records, dev.examples, strict=True):
        assert set(record) == {"id", "answer", "start", "end", "score"}
        if record["answer"]:
            assert example.context[record["start"] : record["end"]] == record["answer"]
        else:
            assert record["start"] is None and record["end"] is None

    # JSONL questions without answers (the config's predict_file)
    out = tmp_path / "predict" / "questions.jsonl"
    assert (
        run_cli(
            "predict",
            *common,
            "--ckpt_path",
            checkpoint,
            "--data.predictions_file",
            out,
            "--trainer.default_root_dir",
            tmp_path / "predict",
        )
        == 0
    )
    assert [r["id"] for r in read_jsonl(out)] == ["p1", "p2", "p3", "p4"]


def test_squad_v1_fit_writes_v1_metrics(tmp_path, tiny_bert_dir, fast_trainer_args):
    run = tmp_path / "fit"
    assert (
        run_cli(
            "fit",
            "--config",
            "configs/squad.yaml",
            "--model.pretrained",
            tiny_bert_dir,
            *WINDOWS,
            *QUICK,
            "--trainer.default_root_dir",
            run,
            *fast_trainer_args,
        )
        == 0
    )
    assert set(json.loads((run / "metrics.json").read_text())) == {
        "val/exact_match",
        "val/f1",
        "val/evaluated_examples",
        "val/total_examples",
        "best_checkpoint",
        "input_lengths",
    }
    assert (run / "predictions.json").is_file() and not (run / "null_odds.json").exists()
    assert (run / "checkpoints" / "best.ckpt").is_file()


def test_bad_input_stops_before_writing(tmp_path, tiny_bert_dir, fast_trainer_args, capsys):
    document = json.loads(Path("data/squad/dev-v1.1.json").read_text(encoding="utf-8"))
    qa = document["data"][0]["paragraphs"][0]["qas"][0]
    qa["answers"][0]["answer_start"] += 3
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document), encoding="utf-8")
    run = tmp_path / "run"
    args = [
        "--config",
        "configs/squad.yaml",
        "--model.pretrained",
        tiny_bert_dir,
        "--trainer.default_root_dir",
        run,
        *fast_trainer_args,
    ]
    capsys.readouterr()
    # (fit: validate without a fine-tuned checkpoint is an error of its own)
    assert run_cli("fit", *args, "--data.validation_file", bad) == 2
    error = capsys.readouterr().err
    # one line naming the file, the question and the problem (earlier lines: warnings from the libraries)
    assert error.strip().splitlines()[-1].startswith(f"error: {bad} (example {qa['id']}): answer_start")
    assert not (run / "predictions.json").exists() and not (run / "metrics.json").exists()

    assert run_cli("fit", *args, "--data.max_seq_length", "40") == 2
    assert (
        capsys.readouterr().err.strip().splitlines()[-1].startswith("error: max_seq_length=40 leaves no room")
    )

    assert run_cli("fit", *args, "--model.n_best_size", "0") == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line == "error: n_best_size (0) and max_answer_length (30) must be >= 1"
    assert not (run / "predictions.json").exists()


def test_partial_evaluation_scores_the_questions_it_evaluated(
    tmp_path, tiny_bert_dir, fast_trainer_args, capfd
):
    """--trainer.limit_val_batches: EM/F1 over the questions evaluated (equal to the official
    scorer on exactly those), their count in metrics.json, and one note on stderr; a full
    evaluation prints none."""
    from .test_metrics_squad import _official_v1

    common = ["--config", "configs/squad.yaml", *WINDOWS, *fast_trainer_args, "--data.eval_batch_size", "4"]
    limit = ["--trainer.limit_val_batches", "2"]
    run = tmp_path / "fit"
    two_epochs = [*QUICK, "--trainer.max_epochs", "2"]  # two validations, one note
    fit = ["fit", *common, "--model.pretrained", tiny_bert_dir, *two_epochs, *limit]
    assert run_cli(*fit, "--trainer.default_root_dir", run) == 0
    err = capfd.readouterr().err
    predictions = json.loads((run / "predictions.json").read_text())
    total = len(read_squad("data/squad/dev-v1.1.json").examples)
    evaluated = len(predictions)
    assert 0 < evaluated < total
    note = (
        rf"note: validation \S*dev-v1\.1\.json: {evaluated} of {total} questions evaluated "
        r"\(--trainer\.limit_val_batches 2\): the scores cover those only"
    )
    assert len(re.findall(note, err)) == 1, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["val/evaluated_examples"], metrics["val/total_examples"]) == (evaluated, total)

    # The official v1.1 scorer on a data file holding exactly the evaluated questions.
    document = json.loads(Path("data/squad/dev-v1.1.json").read_text(encoding="utf-8"))
    for article in document["data"]:
        for paragraph in article["paragraphs"]:
            paragraph["qas"] = [qa for qa in paragraph["qas"] if qa["id"] in predictions]
    official = _official_v1(document["data"], predictions)
    assert 100 * metrics["val/exact_match"] == pytest.approx(official["exact_match"])
    assert 100 * metrics["val/f1"] == pytest.approx(official["f1"])
    # A question counts once all of its windows ran: 2 batches of 4 run the first 8 windows (file
    # order), so the evaluated questions are those whose windows all fall among them.
    dev = read_squad("data/squad/dev-v1.1.json").examples
    features, _ = QAFeaturizer(64, 24, 24)(dev, load_tokenizer(tiny_bert_dir))
    last_window = {}
    for number, feature in enumerate(features):
        last_window[dev[feature.example_index].id] = number
    assert set(predictions) == {qid for qid, number in last_window.items() if number < 8}

    checkpoint = run / "checkpoints" / "best.ckpt"
    again = tmp_path / "validate"
    assert (
        run_cli("validate", *common, *limit, "--ckpt_path", checkpoint, "--trainer.default_root_dir", again)
        == 0
    )
    assert len(re.findall(note, capfd.readouterr().err)) == 1
    validated = evaluation_metrics(again, "validation")
    validated.pop("input_lengths")  # the dev file's, whole: not cut by the limit
    assert validated == pytest.approx(
        {k: v for k, v in metrics.items() if k not in ("best_checkpoint", "input_lengths")}
    )

    whole = tmp_path / "whole"
    assert run_cli("validate", *common, "--ckpt_path", checkpoint, "--trainer.default_root_dir", whole) == 0
    assert "questions evaluated" not in capfd.readouterr().err
    metrics = evaluation_metrics(whole, "validation")
    assert metrics["val/evaluated_examples"] == metrics["val/total_examples"] == total
