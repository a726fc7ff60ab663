"""vocab.txt reading and the casing rules, without torch or transformers."""

from __future__ import annotations

import json
import warnings

import pytest

from bert_core import CheckpointError
from bert_core.vocab import (
    SPECIAL_TOKENS,
    infer_lower_case,
    missing_special_tokens,
    read_vocab,
    read_vocab_tokens,
    vocab_ids,
    write_tokenizer_files,
)

from .test_bert_core import fixture_dir


def write(path, text: str):
    path.write_bytes(text.encode("utf-8"))
    return path


def test_tokens_in_line_order_trailing_newline_and_cr_dropped(tmp_path):
    assert read_vocab_tokens(write(tmp_path / "a.txt", "[PAD]\n[UNK]\nthe\n")) == ["[PAD]", "[UNK]", "the"]
    assert read_vocab_tokens(write(tmp_path / "b.txt", "[PAD]\r\n[UNK]\r\nthe")) == ["[PAD]", "[UNK]", "the"]
    # only the one empty "line" after the final newline goes: a blank token keeps its id
    assert read_vocab_tokens(write(tmp_path / "c.txt", "a\n\nb\n\n")) == ["a", "", "b", ""]
    assert read_vocab_tokens(write(tmp_path / "d.txt", " x \n")) == [" x "]


def test_last_id_of_a_duplicate_wins_as_in_google_and_transformers(tmp_path):
    path = write(tmp_path / "vocab.txt", "a\nb\na\nc\n")
    with pytest.warns(UserWarning, match=r"vocab.txt: 1 token\(s\) listed more than once.*'a' on lines 1, 3"):
        ids = read_vocab(path)
    assert ids == {"a": 2, "b": 1, "c": 3}
    # transformers' own vocab.txt reader (what Google's load_vocab does too: vocab[token] = index)
    from transformers.models.bert import tokenization_bert

    load_vocab = getattr(tokenization_bert, "load_vocab", None)
    if load_vocab is not None:
        assert dict(load_vocab(str(path))) == ids
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert vocab_ids(["a", "b", "a"], warn=False) == {"a": 2, "b": 1}


def test_empty_vocabulary_is_an_error(tmp_path):
    with pytest.raises(CheckpointError, match="empty vocabulary"):
        read_vocab(write(tmp_path / "vocab.txt", ""))
    assert read_vocab_tokens(write(tmp_path / "blank.txt", "\n")) == [""]  # one blank token, as before


def test_fixture_vocab_matches_the_old_reader():
    """read_vocab_tokens is what tasks' load_encoder stored; read_vocab what the tokenizer used."""
    path = fixture_dir() / "tf_checkpoint" / "vocab.txt"
    tokens = [line.rstrip("\r") for line in path.read_text(encoding="utf-8").split("\n")]
    assert tokens.pop() == ""
    assert read_vocab_tokens(path) == tokens and len(tokens) == 513
    assert read_vocab(path) == {token: index for index, token in enumerate(tokens)}
    assert missing_special_tokens(tokens) == [] and tokens.index("[MASK]") == 103


def test_missing_special_tokens_in_order():
    assert missing_special_tokens(["[CLS]", "the"]) == ["[PAD]", "[UNK]", "[SEP]", "[MASK]"]
    assert missing_special_tokens({t: i for i, t in enumerate(SPECIAL_TOKENS)}) == []


def test_casing_evidence_in_order(tmp_path):
    uncased, cased = ["[PAD]", "the", "##s"], ["[PAD]", "The", "the"]
    assert infer_lower_case(tmp_path, uncased) == (
        True,
        "its vocab.txt has no upper-case tokens (an uncased vocabulary)",
    )
    assert infer_lower_case(tmp_path, cased) == (
        False,
        "its vocab.txt has upper-case tokens (a cased vocabulary)",
    )
    # a Google name beats the vocabulary; the directory or the name the user passed
    assert infer_lower_case(tmp_path / "cased_L-12_H-768_A-12", uncased)[0] is False
    assert infer_lower_case(tmp_path, cased, name="hub/bert-base-uncased") == (
        True,
        "the checkpoint is named 'bert-base-uncased'",
    )
    # tokenizer_config.json beats both
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    lower, evidence = infer_lower_case(str(tmp_path), uncased, name="bert-base-uncased")
    assert lower is False and evidence.endswith("tokenizer_config.json says do_lower_case=False")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512}))
    assert infer_lower_case(tmp_path, cased)[0] is False  # no do_lower_case key: fall through


def test_write_tokenizer_files_records_the_casing(tmp_path):
    source = fixture_dir() / "tf_checkpoint"
    write_tokenizer_files(source, tmp_path)
    assert (tmp_path / "vocab.txt").read_bytes() == (source / "vocab.txt").read_bytes()
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config == {"tokenizer_class": "BertTokenizer", "do_lower_case": True}
    assert infer_lower_case(tmp_path, [])[0] is True  # and the copy says so itself
    empty = tmp_path / "nothing"
    empty.mkdir()
    write_tokenizer_files(empty, empty)  # no vocab.txt: nothing to write
    assert list(empty.iterdir()) == []
