"""NER end to end through the CLI with a tiny model: fit, validate, test, predict (text and CoNLL),
and the test metrics equal seqeval run directly on the written CoNLL predictions."""

import json
from pathlib import Path

import pytest
import torch
from seqeval.metrics import classification_report
from seqeval.metrics.sequence_labeling import get_entities

from bert_core.tokenizer import load_tokenizer
from tasks.data.conll import read_conll
from tasks.io import read_text_lines
from tasks.tagging import TaggingModule

from .conftest import FAST_TRAINER_ARGS as FAST
from .conftest import ROOT, evaluation_metrics, run_cli

CONFIG = ROOT / "configs" / "ner.yaml"


def seqeval_on_predictions_file(path: Path) -> dict[str, float]:
    """conlleval's way: gold is the second-to-last column, the prediction the last."""
    gold, predicted = [], []
    for sentence in read_conll(path, tag_column=-2).sentences:
        gold.append(sentence.tags)
    for sentence in read_conll(path, tag_column=-1).sentences:
        predicted.append(sentence.tags)
    return seqeval_scores(gold, predicted)


def predicted_entities(sentence, joiner: str) -> list[tuple[str, str]]:
    """(text, type) of each entity a predicted CoNLL sentence holds, its words joined by ``joiner``
    (as in the raw text line of the same words)."""
    return [
        (joiner.join(sentence.words[first : last + 1]), kind)
        for kind, first, last in get_entities(sentence.tags)
    ]


def check_entity_offsets(records: list[dict]) -> int:
    """Each entity's offsets slice its text out of its line; returns how many entities there are."""
    for record in records:
        for entity in record["entities"]:
            assert record["text"][entity["start"] : entity["end"]] == entity["text"]
    return sum(len(record["entities"]) for record in records)


def seqeval_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    """seqeval's default (conlleval's lenient chunking): micro precision/recall/F1, F1 per type."""
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    scores = {f"f1_{name}": row["f1-score"] for name, row in report.items() if not name.endswith(" avg")}
    micro = report["micro avg"]
    return {"precision": micro["precision"], "recall": micro["recall"], "f1": micro["f1-score"], **scores}


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
    fit_record = (run_dir / "metrics.json").read_bytes()
    assert run_cli("validate", *common, "--ckpt_path", checkpoint) == 0
    assert evaluation_metrics(run_dir, "validation")["val/f1"] == pytest.approx(metrics["val/f1"])
    assert (run_dir / "metrics.json").read_bytes() == fit_record  # the fit's record is untouched

    # the checkpoint alone: test, then predict on the test file, and score that file directly
    assert run_cli("test", *common, "--ckpt_path", checkpoint) == 0
    metrics = evaluation_metrics(run_dir, "test")
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

    # raw text, one per line, with an empty line and a Chinese line; the last line is a test
    # sentence whose CoNLL prediction above holds entities, so there are entities to check
    tagged = next(
        sentence
        for sentence in read_conll(conll_out, tag_column=-1).sentences
        if get_entities(sentence.tags) and all(word.isalnum() or word in ".," for word in sentence.words)
    )
    text_file = tmp_path / "notes.txt"
    lines = ["Elena Petrova flew from Oslo to Nairobi.", "", "我在北京工作", "  odd\u200b spacing , here  "]
    lines.append(" ".join(tagged.words))
    text_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    jsonl = tmp_path / "notes.jsonl"
    assert run_cli(*predict, "--data.predict_file", text_file, "--data.predictions_file", jsonl) == 0
    records = [json.loads(line) for line in read_text_lines(jsonl)]
    assert [r["text"] for r in records] == lines
    assert records[1]["entities"] == []
    # the same words, the same entities: the offsets land on the words the CoNLL file tagged
    entities = records[-1]["entities"]
    assert [(entity["text"], entity["type"]) for entity in entities] == predicted_entities(tagged, " ")
    assert check_entity_offsets(records) >= len(entities) > 0
    types = {entity["type"] for record in records for entity in record["entities"]}
    assert types <= {"PER", "LOC", "ORG", "MISC"}


def test_partial_test_scores_the_sentences_it_evaluated(ner_run, tmp_path, capfd):
    """--trainer.limit_test_batches: the scores of the first sentences, their count in metrics.json
    and one note on stderr (seqeval on the same sentences of a full predict gives the same F1)."""
    checkpoint = ner_run / "checkpoints" / "best.ckpt"
    common = ["--config", CONFIG, "--ckpt_path", checkpoint, *FAST, "--data.eval_batch_size", "4"]
    part = tmp_path / "part"
    limit = ["--trainer.limit_test_batches", "1"]
    assert run_cli("test", *common, *limit, "--trainer.default_root_dir", part) == 0
    metrics = evaluation_metrics(part, "test")
    evaluated, total = metrics["test/evaluated_examples"], metrics["test/total_examples"]
    assert 0 < evaluated <= 4 < total == len(read_conll(ROOT / "data/ner/test.conll").sentences)
    err = capfd.readouterr().err
    note = f"{evaluated} of {total} sentences evaluated (--trainer.limit_test_batches 1): the scores cover those only"
    assert err.count(note) == 1, err

    predicted = tmp_path / "all.conll"
    predict = ["predict", *common, "--data.predict_file", ROOT / "data/ner/test.conll"]
    assert (
        run_cli(*predict, "--data.predictions_file", predicted, "--trainer.default_root_dir", tmp_path) == 0
    )
    gold = [s.tags for s in read_conll(predicted, tag_column=-2).sentences][:evaluated]
    tags = [s.tags for s in read_conll(predicted, tag_column=-1).sentences][:evaluated]
    assert metrics["test/f1"] == pytest.approx(seqeval_scores(gold, tags)["f1"], abs=1e-6)

    # (F1 may be 0 both ways for so young a model; the words tagged right are not)
    def accuracy(sentences: int | None) -> float:
        lines = [line.split() for line in read_text_lines(predicted)]
        pairs = [(w[-2], w[-1]) for w in lines if w and w[0] != "-DOCSTART-"]
        if sentences is not None:
            pairs = [p for s in list(zip(gold, tags, strict=True))[:sentences] for p in zip(*s, strict=True)]
        return sum(g == t for g, t in pairs) / len(pairs)

    assert (
        metrics["test/token_accuracy"] == pytest.approx(accuracy(evaluated)) != pytest.approx(accuracy(None))
    )


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
    raw.write_text("王芳在上海工作。\n\n北京很大\n张伟在北京工作。\n李娜去上海了。\n", encoding="utf-8")
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
    conll_out = tmp_path / "zh.predicted.conll"
    assert run_cli(*predict, "--data.predict_file", train, "--data.predictions_file", conll_out) == 0
    tagged = read_conll(conll_out, tag_column=-1).sentences
    assert run_cli(*predict, "--data.predict_file", raw, "--data.predictions_file", out) == 0
    records = [json.loads(line) for line in read_text_lines(out)]
    texts = ["王芳在上海工作。", "", "北京很大", *("".join(sentence.words) for sentence in tagged)]
    assert [r["text"] for r in records] == texts
    # raw Chinese text is cut into characters as the CoNLL file is: the same characters give the
    # same entities, each a run of whole characters of its line
    for record, sentence in zip(records[3:], tagged, strict=True):
        assert [(e["text"], e["type"]) for e in record["entities"]] == predicted_entities(sentence, "")
    assert check_entity_offsets(records) >= sum(len(get_entities(s.tags)) for s in tagged) > 0


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


def argmax_tags_by_hand(checkpoint: Path, tiny_bert_dir: Path, sentences) -> list[list[str]]:
    """Each word's best label from the checkpoint's weights, without the app's data module or
    decoding: the word's first sub-token in ``[CLS] words [SEP]``, the head's argmax there."""
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)
    labels = stored["hyper_parameters"]["label_names"]
    module = TaggingModule(pretrained=str(tiny_bert_dir), label_names=labels)
    module.load_state_dict(stored["state_dict"])
    module.eval()
    tokenizer = load_tokenizer(tiny_bert_dir)
    tags = []
    with torch.no_grad():
        for sentence in sentences:
            encoded = tokenizer(sentence.words, is_split_into_words=True, return_tensors="pt")
            assert encoded["input_ids"].shape[1] <= 128  # one window per sentence
            word_ids = encoded.word_ids(0)
            first = [word_ids.index(word) for word in range(len(sentence.words))]  # each has a sub-token
            logits = module({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]})
            tags.append([labels[i] for i in logits[0, first].argmax(-1).tolist()])
    return tags


def test_argmax_decoding_overrides_the_checkpoint_and_scores_per_word_argmax(
    ner_run, tiny_bert_dir, tmp_path, capfd
):
    """``--model.decoding argmax`` at validate time: the metrics are seqeval's on each word's best
    label (computed here from the weights), and differ from Viterbi's on this model; the option is
    stored in the checkpoint, and the command line wins over it with a note."""
    checkpoint = ner_run / "checkpoints" / "best.ckpt"
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert stored["hyper_parameters"]["decoding"] == "viterbi"  # fit stores the default
    dev = read_conll(ROOT / "data/ner/dev.conll").sentences
    gold = [sentence.tags for sentence in dev]
    by_hand = argmax_tags_by_hand(checkpoint, tiny_bert_dir, dev)
    # the model's argmax has an I- that does not continue an entity (O I-X, B-X I-Y), so the
    # two decodings must differ: a test of argmax that cannot pass with Viterbi
    stray = [
        (before, tag)
        for tags in by_hand
        for before, tag in zip(["O", *tags], tags, strict=False)
        if tag.startswith("I-") and before[2:] != tag[2:]
    ]
    assert stray
    expected = seqeval_scores(gold, by_hand)
    words = sum(len(tags) for tags in gold)
    expected["token_accuracy"] = (
        sum(
            g == p
            for tags, guess in zip(gold, by_hand, strict=True)
            for g, p in zip(tags, guess, strict=True)
        )
        / words
    )

    def validate(name: str, ckpt: Path, *options: str) -> dict[str, float]:
        run_dir = tmp_path / name
        common = ["--config", CONFIG, "--trainer.default_root_dir", run_dir, *FAST]
        assert run_cli("validate", *common, "--ckpt_path", ckpt, *options) == 0
        return evaluation_metrics(run_dir)

    capfd.readouterr()
    argmax = validate("argmax", checkpoint, "--model.decoding", "argmax")
    assert "note: --model.decoding argmax overrides the checkpoint's viterbi" in capfd.readouterr().err
    for name, value in expected.items():
        assert argmax[f"val/{name}"] == pytest.approx(value, abs=1e-6), name
    viterbi = validate("viterbi", checkpoint)
    # the decodings differ (entity F1 may be 0 for both on a model this short-trained: then the
    # per-word accuracy tells them apart)
    assert (viterbi["val/f1"], viterbi["val/token_accuracy"]) != pytest.approx(
        (argmax["val/f1"], argmax["val/token_accuracy"]), abs=1e-6
    )
    assert viterbi["val/f1"] == pytest.approx(json.loads((ner_run / "metrics.json").read_text())["val/f1"])

    # a checkpoint that says argmax (as a fit with --model.decoding argmax writes it) decodes with
    # argmax unless told otherwise
    stored["hyper_parameters"]["decoding"] = "argmax"
    argmax_checkpoint = tmp_path / "argmax.ckpt"
    torch.save(stored, argmax_checkpoint)
    assert validate("stored", argmax_checkpoint)["val/f1"] == pytest.approx(argmax["val/f1"], abs=1e-6)
    capfd.readouterr()
    back = validate("back", argmax_checkpoint, "--model.decoding", "viterbi")
    assert "note: --model.decoding viterbi overrides the checkpoint's argmax" in capfd.readouterr().err
    assert back["val/f1"] == pytest.approx(viterbi["val/f1"], abs=1e-6)

    # predict writes the same per-word argmax tags, invalid sequences and all
    out = tmp_path / "dev.predicted.conll"
    predict = ["predict", "--config", CONFIG, "--trainer.default_root_dir", tmp_path / "predict", *FAST]
    predict += [
        "--ckpt_path",
        checkpoint,
        "--model.decoding",
        "argmax",
        "--data.predict_file",
        ROOT / "data/ner/dev.conll",
    ]
    assert run_cli(*predict, "--data.predictions_file", out) == 0
    assert [sentence.tags for sentence in read_conll(out, tag_column=-1).sentences] == by_hand
