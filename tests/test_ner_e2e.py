"""NER end to end through the CLI with a tiny model: fit, validate, test, predict (text and CoNLL),
and the test metrics equal seqeval run directly on the written CoNLL predictions."""

import json
from pathlib import Path

import pytest
from seqeval.metrics import classification_report

from tasks.data.conll import read_conll
from tasks.io import read_text_lines

from .conftest import ROOT, run_cli

CONFIG = ROOT / "configs" / "ner.yaml"


def seqeval_on_predictions_file(path: Path) -> dict[str, float]:
    """conlleval's way: gold is the second-to-last column, the prediction the last."""
    gold, predicted = [], []
    for sentence in read_conll(path, tag_column=-2).sentences:
        gold.append(sentence.tags)
    for sentence in read_conll(path, tag_column=-1).sentences:
        predicted.append(sentence.tags)
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    scores = {f"f1_{name}": row["f1-score"] for name, row in report.items() if not name.endswith(" avg")}
    micro = report["micro avg"]
    return {"precision": micro["precision"], "recall": micro["recall"], "f1": micro["f1-score"], **scores}


FAST = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.accelerator", "cpu", "--trainer.devices", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def ner_run(tiny_bert_dir, tmp_path_factory) -> Path:
    """One short fit on the shipped sample: 4 training batches, then a full validation."""
    run_dir = tmp_path_factory.mktemp("ner") / "run"
    fit = ["fit", "--config", CONFIG, "--trainer.default_root_dir", run_dir, *FAST]
    fit += ["--model.pretrained", tiny_bert_dir, "--model.learning_rate", "1e-3", "--data.batch_size", "8"]
    fit += ["--trainer.limit_train_batches", "4", "--trainer.max_epochs", "1"]
    assert run_cli(*fit, "--data.cache_dir", run_dir.parent / "cache") == 0
    return run_dir


def test_fit_validate_test_predict(ner_run, tmp_path):
    run_dir = ner_run
    common = ["--config", CONFIG, "--trainer.default_root_dir", run_dir, *FAST]
    checkpoint = run_dir / "checkpoints" / "best.ckpt"
    assert checkpoint.is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("val/f1", "val/precision", "val/recall", "val/token_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    assert run_cli("validate", *common, "--ckpt_path", checkpoint) == 0
    assert json.loads((run_dir / "metrics.json").read_text())["val/f1"] == pytest.approx(metrics["val/f1"])

    # the checkpoint alone: test, then predict on the test file, and score that file directly
    assert run_cli("test", *common, "--ckpt_path", checkpoint) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    conll_out = tmp_path / "test.predicted.conll"
    predict = ["predict", *common, "--ckpt_path", checkpoint]
    assert (
        run_cli(
            *predict,
            "--data.predict_file",
            ROOT / "data/ner/test.conll",
            "--data.predictions_file",
            conll_out,
        )
        == 0
    )
    source_lines = read_text_lines(ROOT / "data/ner/test.conll")
    written_lines = read_text_lines(conll_out)
    assert len(written_lines) == len(source_lines)
    for source, written in zip(source_lines, written_lines, strict=True):
        assert written.split()[:-1] == source.split()  # the same columns, plus the prediction
    direct = seqeval_on_predictions_file(conll_out)
    assert any(line.split()[-1] != "O" for line in written_lines if line)  # not a vacuous 0 = 0
    for name, value in direct.items():
        assert metrics[f"test/{name}"] == pytest.approx(value, abs=1e-6), name

    # raw text, one per line, with an empty line and a Chinese line
    text_file = tmp_path / "notes.txt"
    lines = ["Elena Petrova flew from Oslo to Nairobi.", "", "我在北京工作", "  odd\u200b spacing , here  "]
    text_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    jsonl = tmp_path / "notes.jsonl"
    assert run_cli(*predict, "--data.predict_file", text_file, "--data.predictions_file", jsonl) == 0
    records = [json.loads(line) for line in read_text_lines(jsonl)]
    assert [r["text"] for r in records] == lines
    assert records[1]["entities"] == []
    for record in records:
        for entity in record["entities"]:
            assert record["text"][entity["start"] : entity["end"]] == entity["text"]
            assert entity["type"] in ("PER", "LOC", "ORG", "MISC")


CHINESE_TRAIN = """-DOCSTART- O

张 B-PER
伟 I-PER
在 O
北 B-LOC
京 I-LOC
工 O
作 O
。 O

李 B-PER
娜 I-PER
去 O
上 B-LOC
海 I-LOC
了 O
。 O
"""


def test_chinese_character_level_conll_and_raw_text(tmp_path, tiny_bert_dir, fast_trainer_args):
    train = tmp_path / "zh.conll"
    train.write_text(CHINESE_TRAIN, encoding="utf-8")
    raw = tmp_path / "zh.txt"
    raw.write_text("王芳在上海工作。\n\n北京很大\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    options = [
        *fast_trainer_args,
        "--config", CONFIG,
        "--trainer.default_root_dir", run_dir,
        "--model.pretrained", tiny_bert_dir,
        "--data.train_file", train,
        "--data.validation_file", train,
        "--data.test_file", train,
        "--data.cache_dir", tmp_path / "cache",
    ]  # fmt: skip
    assert run_cli("fit", *options, "--trainer.max_steps", "2", "--data.tag_scheme", "IOBES") == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "val/f1" in metrics
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    out = tmp_path / "zh.jsonl"
    # no --data.tag_scheme: the checkpoint's IOBES labels decide the decoding rules
    predict = ["predict", *options, "--ckpt_path", checkpoint]
    assert run_cli(*predict, "--data.predict_file", raw, "--data.predictions_file", out) == 0
    records = [json.loads(line) for line in read_text_lines(out)]
    assert [r["text"] for r in records] == ["王芳在上海工作。", "", "北京很大"]
    for record in records:
        for entity in record["entities"]:
            assert record["text"][entity["start"] : entity["end"]] == entity["text"]


def test_bad_input_exits_2_naming_file_and_line_and_writes_nothing(ner_run, tmp_path, capsys):
    bad_train = tmp_path / "bad_train.conll"
    bad_train.write_text("Anna B-PER\nruns O\n\nBob B_PER\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    common = ["--config", CONFIG, "--trainer.default_root_dir", run_dir, *FAST]
    assert run_cli("fit", *common, "--data.train_file", bad_train) == 2
    assert "bad_train.conll:4: invalid tag 'B_PER'" in capsys.readouterr().err
    assert not (run_dir / "checkpoints").exists()

    bad_predict = tmp_path / "bad.conll"
    bad_predict.write_text("Anna B-PER\nruns O extra\n", encoding="utf-8")
    out = tmp_path / "out.conll"
    checkpoint = ner_run / "checkpoints" / "best.ckpt"
    predict = ["predict", *common, "--ckpt_path", checkpoint, "--data.predictions_file", out]
    assert run_cli(*predict, "--data.predict_file", bad_predict) == 2
    assert "bad.conll:2: expected 2 columns like the first token line, found 3" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".out.conll*"))
