"""The input-length report: once per file featurised, how many inputs were longer than
max_seq_length (truncated, or split into windows) and the longest, the same from the feature cache
as when the features were made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.classification import ClassificationDataModule
from tasks.datamodule import TaskDataModule
from tasks.feature_cache import InputLengths
from tasks.qa import QADataModule
from tasks.tagging import TaggingDataModule

# "the" is one token of the uncased vocab: n of them make an input of n + 2 tokens ([CLS], [SEP]).
SHORT, LONG, LONGER = 5, 20, 30  # with max_seq_length 16: two of the three are longer


def words(n: int) -> str:
    return " ".join(["the"] * n)


def classification_file(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "train.tsv"
    rows = [f"{words(n)}\t{label}" for n, label in ((SHORT, "a"), (LONG, "b"), (LONGER, "a"))]
    path.write_text("text\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return {"train_file": str(path)}


def tagging_file(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "train.conll"
    sentences = [
        "\n".join(f"the {'B-X' if i == 0 else 'O'}" for i in range(n)) for n in (SHORT, LONG, LONGER)
    ]
    path.write_text("\n\n".join(sentences) + "\n", encoding="utf-8")
    return {"train_file": str(path)}


def qa_file(tmp_path: Path) -> dict[str, str]:
    """Questions of 2 tokens, contexts of SHORT, LONG, LONGER tokens: 2 + n + 3 tokens each."""
    paragraphs = [
        {
            "context": words(n),
            "qas": [{"id": str(n), "question": "the the", "answers": [{"text": "the", "answer_start": 0}]}],
        }
        for n in (SHORT, LONG, LONGER)
    ]
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return {"train_file": str(path), "max_query_length": 4}


CASES = {
    "classification": (ClassificationDataModule, classification_file, 2, "were truncated"),
    "ner": (TaggingDataModule, tagging_file, 2, "were split into windows"),
    "qa": (QADataModule, qa_file, 5, "were split into windows"),
}


@pytest.mark.parametrize("task", CASES)
def test_long_inputs_are_counted_exactly_when_featurised_and_again_from_the_cache(
    task, tiny_bert_dir: Path, tmp_path: Path, capfd
):
    data_class, make_file, overhead, handled = CASES[task]
    options = {**make_file(tmp_path), "tokenizer": str(tiny_bert_dir), "cache_dir": str(tmp_path / "cache")}
    source = options["train_file"]
    expected = InputLengths(16, inputs=3, too_long=2, longest_tokens=LONGER + overhead)
    line = f"{source}: 2 of 3 inputs longer than max_seq_length 16 {handled} (longest {LONGER + overhead} tokens)"

    def featurise() -> TaskDataModule:
        data = data_class(max_seq_length=16, **options)
        data.setup("fit")
        return data

    first = featurise()
    cached = {path: path.stat().st_mtime_ns for path in (tmp_path / "cache").iterdir()}
    second = featurise()
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "cache").iterdir()} == cached  # a cache hit
    for data in (first, second):
        assert data.lengths.by_file == {source: expected}
        assert data.lengths.by_split == {
            "train": {
                "file": source,
                "max_seq_length": 16,
                "inputs": 3,
                "too_long": 2,
                "longest_tokens": LONGER + overhead,
            }
        }
    # said once per featurisation, on stderr by global rank 0 (one process of a multi-GPU run says it)
    assert [message for message in capfd.readouterr().err.splitlines() if message.startswith(source)] == [
        line,
        line,
    ]


def test_a_file_whose_inputs_all_fit_says_so(tiny_bert_dir: Path, tmp_path: Path):
    options = {**classification_file(tmp_path), "tokenizer": str(tiny_bert_dir), "cache_dir": str(tmp_path)}
    data = ClassificationDataModule(max_seq_length=64, **options)
    data.setup("fit")
    (lengths,) = data.lengths.by_file.values()
    assert lengths.line("x.tsv", "were truncated") == (
        f"x.tsv: none of 3 inputs longer than max_seq_length 64 (longest {LONGER + 2} tokens)"
    )
