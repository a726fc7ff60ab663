"""Classification features: the featurizer's checks and cache key, tokenising, and the output formats."""

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tasks.classification import ClassificationDataModule
from tasks.data.classification_outputs import confusion_matrix_writer, prediction_files, prediction_records
from tasks.data.glue import SUBMISSION_HEADER, hub_examples, submission_rows
from tasks.data.tables import Example
from tasks.features.classification import SentenceFeatures
from tasks.io import UserError

SENTIMENT = ("negative", "positive")


def test_label_names_become_a_tuple_and_the_value_is_frozen():
    features = SentenceFeatures("classification", ["b", "a"], pair=False, max_seq_length=16)
    assert features.label_names == ("b", "a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        features.max_seq_length = 32


@pytest.mark.parametrize(
    "fields, fragment",
    [
        (("sst3", SENTIMENT, False, 16), "unknown task 'sst3'"),
        (("stsb", ("0", "1"), True, 16), "only when it is not a regression"),
        (("classification", None, False, 16), "only when it is not a regression"),
        (("classification", (), False, 16), "at least one label"),
        (("classification", ("a", "b", "a"), False, 16), "'a' more than once"),
        (("sst2", ("0", "1"), True, 16), "takes single texts"),
        (("mrpc", ("0", "1"), False, 16), "takes pairs"),
        (("mrpc", ("0", "1"), True, 4), "--data.max_seq_length must be at least 5"),
        (("sst2", ("0", "1"), False, 2), "--data.max_seq_length must be at least 3"),
    ],
)
def test_bad_settings_are_user_errors(fields, fragment):
    with pytest.raises(UserError, match=fragment):
        SentenceFeatures(*fields)


def test_the_cache_key_is_the_fields_and_changes_with_each_of_them():
    base = SentenceFeatures("classification", ("a", "b"), pair=True, max_seq_length=16)
    assert base.cache_key() == {
        "task": "classification",
        "label_names": ("a", "b"),
        "pair": True,
        "max_seq_length": 16,
    }
    assert SentenceFeatures("classification", ["a", "b"], True, 16).cache_key() == base.cache_key()
    changed = [
        dataclasses.replace(base, label_names=("b", "a")),
        dataclasses.replace(base, pair=False),
        dataclasses.replace(base, max_seq_length=32),
        dataclasses.replace(base, task="regression", label_names=None),
    ]
    assert all(other.cache_key() != base.cache_key() for other in changed)


def test_gold_values_and_rows():
    features = SentenceFeatures("classification", ("neg", "pos"), pair=False, max_seq_length=16)
    examples = [Example("0", "good", label="pos"), Example("1", "bad", label="neg"), Example("2", "?")]
    assert [features.gold(e) for e in examples] == [1, 0, None]
    assert features.rows(examples)[0] == {"text": "good", "text_pair": "", "label": 1, "example": 0}
    regression = SentenceFeatures("stsb", None, pair=True, max_seq_length=16)
    assert regression.gold(Example("0", "a", "b", label="3.5")) == 3.5


def test_tokenizing_truncates_pairs_and_keeps_labels_only_when_all_are_known(tmp_path, tiny_bert_dir):
    data = ClassificationDataModule(task="mrpc", tokenizer=str(tiny_bert_dir), cache_dir=str(tmp_path))
    features = dataclasses.replace(data.features, max_seq_length=8)
    tokenize = features.tokenizing(data.tokenizer)
    long_text = "the quick brown fox jumps over the lazy dog"
    batch = {"text": [long_text, "a"], "text_pair": [long_text, "b"], "label": [1, 0], "example": [4, 5]}
    out = tokenize(batch)
    assert [len(ids) for ids in out["input_ids"]] == [8, 5]  # [CLS] a [SEP] b [SEP]
    assert out["token_type_ids"][1] == [0, 0, 0, 1, 1]
    assert out["example"] == [4, 5] and out["labels"] == [1, 0]
    assert "labels" not in tokenize({**batch, "label": [1, None]})


def test_the_data_module_caps_the_length_and_other_options_leave_the_key_alone(tmp_path, tiny_bert_dir):
    def data(**options) -> ClassificationDataModule:
        return ClassificationDataModule(task="sst2", tokenizer=str(tiny_bert_dir), **options)

    capped = data(max_seq_length=10**6)
    with pytest.warns(UserWarning, match="exceeds the encoder's"):
        assert capped.features.max_seq_length == capped.tokenizer.model_max_length
    assert data(batch_size=4, num_workers=1).features.cache_key() == data(batch_size=8).features.cache_key()
    assert data(max_seq_length=64).features.cache_key() != data(max_seq_length=32).features.cache_key()
    assert data(labels=["1", "0"]).features.cache_key() != data().features.cache_key()
    with pytest.raises(UserError, match="at least 5"):
        ClassificationDataModule(task="mrpc", max_seq_length=4, tokenizer=str(tiny_bert_dir))


# --- output formats ---------------------------------------------------------------------------------


def test_prediction_records_and_the_submission_rows(tmp_path):
    examples = [Example("7", "fine", line=2), None]  # None: a blank line of a text file
    label = SimpleNamespace(label="1", probabilities={"0": 0.25, "1": 0.75}, score=None)
    render = prediction_records(examples.__getitem__, {"0": "negative", "1": "positive"}.get)
    record = json.loads(render(0, label)[0])
    assert record == {"line": 2, "index": "7", "text": "fine", "label": "positive",
                      "probabilities": {"negative": 0.25, "positive": 0.75}}  # fmt: skip
    assert json.loads(render(1, None)[0]) == {"line": 2, "text": ""}
    rows = submission_rows("sst2", examples.__getitem__)
    assert rows(0, label) == ["7\t1"] and rows(1, None) == []
    score = SimpleNamespace(label=None, probabilities=None, score=3.14159)
    assert submission_rows("stsb", examples.__getitem__)(0, score) == ["7\t3.142"]


def test_prediction_files_add_glue_submissions_only_for_glue_tasks(tmp_path):
    path = tmp_path / "predictions.jsonl"
    files = prediction_files(path, "mnli", "test_mismatched.tsv", lambda: [].__getitem__)
    assert [f.path.name for f in files] == ["predictions.jsonl", "MNLI-mm.tsv"]
    assert files[1].header == [SUBMISSION_HEADER]
    assert [f.path for f in prediction_files(path, "classification", None, lambda: [].__getitem__)] == [path]


def test_confusion_matrix_rows_are_gold_columns_predicted(tmp_path):
    predictions = {i: SimpleNamespace(label=label) for i, label in enumerate(["1", "1", "0"])}
    write = confusion_matrix_writer("sst2", [1, 0, 0], ("0", "1"), suffix="_mm")
    (path,) = write(predictions, tmp_path)
    assert path == tmp_path / "confusion_matrix_mm.json"
    assert json.loads(Path(path).read_text()) == {"labels": list(SENTIMENT), "matrix": [[1, 1], [0, 1]]}


def test_hub_rows_use_glue_columns_and_class_label_names():
    rows = [
        {"idx": 3, "premise": "p", "hypothesis": "h", "label": 2},
        {"idx": 4, "premise": "q", "hypothesis": "i", "label": -1},  # GLUE's unlabelled test rows
    ]
    examples = hub_examples(rows, "mnli", "text", None, "label", ("entailment", "neutral", "contradiction"))
    assert examples[0] == Example("3", "p", "h", "contradiction", line=1)
    assert examples[1].label is None
    generic = hub_examples([{"review": "ok", "stars": "5"}], "classification", "review", None, "stars", None)
    assert generic == [Example("0", "ok", None, "5", line=1)]
