"""Alignment of word labels to sub-tokens, windows over long sentences, and document context."""

import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest

from tasks.data.conll import is_valid_sequence
from tasks.decoding.tagging import WordScores, decode_sentence, transition_constraints
from tasks.features.tagging import (
    IGNORE_INDEX,
    TaggingFeaturizer,
    build_windows,
    lines_as_rows,
    sentence_spans,
    windows_per_sentence,
)
from tasks.tagging import TaggingDataModule


def make_datamodule(tmp_path: Path, tokenizer_dir: Path, train: str, **options) -> TaggingDataModule:
    tmp_path.mkdir(parents=True, exist_ok=True)
    train_path = tmp_path / "train.conll"
    train_path.write_text(train, encoding="utf-8")
    options.setdefault("validation_file", str(train_path))
    return TaggingDataModule(
        train_file=str(train_path), tokenizer=str(tokenizer_dir), cache_dir=str(tmp_path / "cache"), **options
    )


def features_of(datamodule: TaggingDataModule, split: str = "train") -> list[dict]:
    return list(datamodule.build(split)[1])


def test_sentence_spans_hand_computed():
    # budget 4, words of 1, 0, 2, 1, 3, 1, 1 sub-tokens: ranges start about 2 sub-tokens apart
    spans = sentence_spans([1, 0, 2, 1, 3, 1, 1], budget=4)
    assert spans == [(0, 4, [0, 2, 3]), (3, 5, [4]), (5, 7, [5, 6])]
    assert sentence_spans([2, 2], budget=4) == [(0, 2, [0, 1])]  # fits: one range, no overlap


def test_labels_sit_on_first_sub_tokens_and_empty_words_do_not_shift_them(tmp_path, tiny_bert_dir):
    # "\u200b" (zero-width space) and "\x07" tokenize to nothing
    text = "Grünwald B-PER\n\u200b O\nvisited O\n\x07 O\nOuagadougou B-LOC\nyesterday O\n"
    datamodule = make_datamodule(tmp_path, tiny_bert_dir, text)
    tokenizer = datamodule.tokenizer
    (feature,) = features_of(datamodule)
    names = datamodule.label_names
    assert names == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    pieces = [
        tokenizer(w, add_special_tokens=False)["input_ids"]
        for w in ["Grünwald", "visited", "Ouagadougou", "yesterday"]
    ]
    assert all(len(p) >= 1 for p in pieces) and len(pieces[2]) > 1  # several pieces
    assert feature["input_ids"] == [tokenizer.cls_token_id, *sum(pieces, []), tokenizer.sep_token_id]
    assert feature["word_indices"] == [0, 2, 4, 5]  # words 1 and 3 have no sub-token
    expected = [IGNORE_INDEX] * len(feature["input_ids"])
    position = 1
    for word, tag in zip(pieces, ["B-PER", "O", "B-LOC", "O"], strict=True):
        expected[position] = names.index(tag)
        position += len(word)
    assert feature["labels"] == expected
    assert feature["num_predictable"] == 4


def test_label_all_tokens_labels_later_sub_tokens_as_inside(tmp_path, tiny_bert_dir):
    datamodule = make_datamodule(
        tmp_path, tiny_bert_dir, "Ouagadougou B-LOC\nrocks O\n", label_all_tokens=True
    )
    (feature,) = features_of(datamodule)
    names = datamodule.label_names
    count = len(datamodule.tokenizer("Ouagadougou", add_special_tokens=False)["input_ids"])
    labels = feature["labels"]
    assert labels[1] == names.index("B-LOC")
    assert labels[2 : 1 + count] == [names.index("I-LOC")] * (count - 1)
    assert labels[1 + count] == names.index("O")


def test_600_word_sentence_every_word_predicted_exactly_once_with_the_most_context(tmp_path, tiny_bert_dir):
    rng = random.Random(0)
    vocabulary = [
        "the",
        "council",
        "approved",
        "Ouagadougou",
        "extraordinarily",
        "budget",
        ",",
        "\u200b",
        "Ngozi",
    ]
    words = [rng.choice(vocabulary) for _ in range(600)]
    tags = ["B-LOC" if w == "Ouagadougou" else "O" for w in words]
    text = "".join(f"{w} {t}\n" for w, t in zip(words, tags, strict=True))
    datamodule = make_datamodule(tmp_path, tiny_bert_dir, text, max_seq_length=32)
    features = features_of(datamodule)
    assert len(features) > 30  # the sentence has about 1,000 sub-tokens
    assert all(len(f["input_ids"]) <= 32 for f in features)

    seen = [index for f in features for index in f["word_indices"]]
    predictable = [i for i, w in enumerate(words) if w != "\u200b"]
    assert sorted(seen) == predictable  # every word with sub-tokens exactly once

    tokenizer = datamodule.tokenizer
    lengths = [len(tokenizer(w, add_special_tokens=False)["input_ids"]) for w in words]
    first_piece = [tokenizer(w, add_special_tokens=False)["input_ids"][:1] for w in words]
    spans = sentence_spans(lengths, budget=30)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    for feature, (start, end, _) in zip(features, spans, strict=True):
        for position, word in zip(feature["word_positions"], feature["word_indices"], strict=True):
            assert [feature["input_ids"][position]] == first_piece[word]  # the label sits on the word
            context = min(offsets[word] - offsets[start], offsets[end] - offsets[word + 1])
            others = [
                min(offsets[word] - offsets[s], offsets[e] - offsets[word + 1])
                for s, e, _ in spans
                if s <= word < e
            ]
            assert context == max(others)  # no other window gives this word more context

    # decoded from random scores, every word gets one tag and the sequence is valid
    scores_rng = np.random.default_rng(0)
    collected = [
        WordScores(
            np.array(f["word_indices"]),
            np.log(scores_rng.dirichlet(np.ones(3), size=len(f["word_indices"]))),
        )
        for f in features
    ]
    constraints = transition_constraints(datamodule.label_names, "BIO")
    decoded = decode_sentence(len(words), collected, datamodule.label_names, constraints)
    assert len(decoded) == 600 and is_valid_sequence(decoded, "BIO")


def test_document_context_fills_windows_with_neighbours_of_the_same_document_only(tmp_path, tiny_bert_dir):
    sentences = [["alpha", "one"], ["beta", "two"], ["gamma", "three"], ["delta", "four"], ["omega", "five"]]
    lines = ["-DOCSTART- O", ""]
    for index, sentence in enumerate(sentences):
        if index == 4:
            lines += ["-DOCSTART- O", ""]
        lines += [f"{w} O" for w in sentence] + [""]
    text = "\n".join(lines)
    plain = features_of(make_datamodule(tmp_path / "a", tiny_bert_dir, text, max_seq_length=8))
    with_context = features_of(
        make_datamodule(tmp_path / "b", tiny_bert_dir, text, max_seq_length=8, document_context=True)
    )
    tokenizer = TaggingDataModule(tokenizer=str(tiny_bert_dir)).tokenizer

    def ids(*words):
        return [tokenizer.convert_tokens_to_ids(w) for w in words]

    assert [f["input_ids"][1:-1] for f in plain] == [ids(*s) for s in sentences]
    # budget 6 sub-tokens: each centre sentence (2) gets 2 words of context on each side where it can
    bodies = [f["input_ids"][1:-1] for f in with_context]
    assert bodies[0] == ids("alpha", "one", "beta", "two", "gamma", "three")  # first: looks right only
    assert bodies[1] == ids("alpha", "one", "beta", "two", "gamma", "three")
    assert bodies[2] == ids("beta", "two", "gamma", "three", "delta", "four")
    assert bodies[3] == ids("beta", "two", "gamma", "three", "delta", "four")  # last of doc 1: looks left
    assert bodies[4] == ids("omega", "five")  # alone in its document: no context from another one
    # only the centre sentence is labelled (and so scored)
    for feature, sentence in zip(with_context, range(5), strict=True):
        assert feature["sentence"] == sentence and feature["word_indices"] == [0, 1]
        centre = feature["input_ids"].index(ids(sentences[sentence][0])[0])
        assert feature["word_positions"] == [centre, centre + 1]
        labelled = [i for i, label in enumerate(feature["labels"]) if label != IGNORE_INDEX]
        assert labelled == [centre, centre + 1]


def test_build_windows_context_splits_room_evenly():
    pieces = [[[1]], [[2], [3]], [[4]], [[5], [6], [7]]]  # four one-document sentences of 1-token words
    windows = build_windows(pieces, [[0, 1, 2, 3]], budget=5, document_context=True)
    assert windows[1].token_ids == [1, 2, 3, 4, 5]  # 3 spare: 1 left, 2 right
    assert windows[1].word_starts == [1, 2]
    assert windows[3].token_ids == [3, 4, 5, 6, 7]  # last sentence: all the room on the left


@pytest.mark.parametrize("max_seq_length", [2, 0])
def test_max_seq_length_must_leave_room_for_a_word(max_seq_length):
    from tasks.io import UserError

    with pytest.raises(UserError, match="max_seq_length"):
        TaggingDataModule(max_seq_length=max_seq_length)


BIO_LABELS = ("O", "B-PER", "I-PER")


def test_featurizer_checks_its_settings_when_made():
    TaggingFeaturizer(BIO_LABELS, "BIO")  # fine
    TaggingFeaturizer(("O", "B-X", "I-X", "E-X", "S-X"), "IOBES", format="text")  # fine
    with pytest.raises(ValueError, match="labels must be O and"):
        TaggingFeaturizer(("B-PER", "I-PER"), "BIO")  # no O
    with pytest.raises(ValueError, match="labels must be O and"):
        TaggingFeaturizer(("O", "B_PER"), "BIO")
    with pytest.raises(ValueError, match="canonical name 'BIO'"):
        TaggingFeaturizer(BIO_LABELS, "iob2")
    with pytest.raises(ValueError, match="unknown tag scheme"):
        TaggingFeaturizer(BIO_LABELS, "BILOU")
    with pytest.raises(ValueError, match="E-/S- tags are IOBES"):
        TaggingFeaturizer(("O", "S-X"), "BIO")
    with pytest.raises(ValueError, match="format must be conll or text"):
        TaggingFeaturizer(BIO_LABELS, "BIO", format="json")
    with pytest.raises(dataclasses.FrozenInstanceError):
        TaggingFeaturizer(BIO_LABELS, "BIO").scheme = "IOB1"


def test_featurizer_cache_key_is_its_fields_and_each_one_counts():
    featurizer = TaggingFeaturizer(BIO_LABELS, "BIO", document_context=True, tag_column=2)
    key = featurizer.cache_key()
    # the settings the data module's cache key has always held, under the same names
    assert key == {
        "labels": ["O", "B-PER", "I-PER"],
        "scheme": "BIO",
        "document_context": True,
        "label_all_tokens": False,
        "tag_column": 2,
        "format": "conll",
    }
    assert TaggingFeaturizer(BIO_LABELS, "BIO", document_context=True, tag_column=2).cache_key() == key
    changes = {
        "labels": ("O", "B-LOC", "I-LOC"),
        "scheme": "IOB1",
        "document_context": False,
        "label_all_tokens": True,
        "tag_column": 1,
        "format": "text",
    }
    assert set(changes) == {field.name for field in dataclasses.fields(TaggingFeaturizer)}
    for name, value in changes.items():
        assert dataclasses.replace(featurizer, **{name: value}).cache_key() != key, name


def test_raw_text_rows_and_window_counts():
    rows = list(lines_as_rows([["Anna", "smiled"], [], ["Bob"]]))
    assert rows == [
        {"sentence_ids": [0], "words": [["Anna", "smiled"]], "labels": [[]]},
        None,  # a line without words: no row, but it keeps its number
        {"sentence_ids": [2], "words": [["Bob"]], "labels": [[]]},
    ]
    assert windows_per_sentence({"sentence": [0, 0, 2]}, 4).tolist() == [2, 0, 1, 0]
    assert windows_per_sentence([], 2).tolist() == [0, 0]  # no features at all


def test_featurizer_batch_function_labels_words_as_the_data_module_does(tmp_path, tiny_bert_dir):
    datamodule = make_datamodule(tmp_path, tiny_bert_dir, "Anna B-PER\nsmiled O\n\nBob B-PER\n")
    featurizer = datamodule.featurizer()
    data = datamodule.read("train")
    function = featurizer.batch_function(datamodule.tokenizer, datamodule.max_seq_length)
    rows = featurizer.rows(data.sentences, data.gold)
    batch = {key: [row[key] for row in rows] for key in rows[0]}
    built = features_of(datamodule)
    assert [f["sentence"] for f in built] == function(batch)["sentence"] == [0, 1]
    assert [f["labels"] for f in built] == function(batch)["labels"]
