"""Tag schemes: spans, conversions (IOB1 <-> BIO <-> IOBES), detection, validity, and scores."""

import random

import pytest
from seqeval.metrics.sequence_labeling import get_entities

from tasks.data.conll import (
    convert_tags,
    detect_scheme,
    is_valid_sequence,
    is_valid_tag,
    label_names_for,
    normalize_scheme,
    spans_to_tags,
    tags_to_spans,
)
from tasks.metrics.ner import ner_scores

# Hand-made cases: (IOB1 as in CoNLL-2003's eng.train, the same in BIO, the same in IOBES)
CASES = [
    (["I-PER", "I-PER", "O", "I-LOC"], ["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "E-PER", "O", "S-LOC"]),
    # two touching entities of one type: the only place IOB1 writes B-
    (["I-LOC", "B-LOC", "I-LOC"], ["B-LOC", "B-LOC", "I-LOC"], ["S-LOC", "B-LOC", "E-LOC"]),
    # touching entities of different types need no B- in IOB1
    (["I-ORG", "I-MISC", "I-MISC"], ["B-ORG", "B-MISC", "I-MISC"], ["S-ORG", "B-MISC", "E-MISC"]),
    (["O", "O"], ["O", "O"], ["O", "O"]),
    (
        ["I-creative-work", "I-creative-work", "I-creative-work", "O", "I-person"],
        ["B-creative-work", "I-creative-work", "I-creative-work", "O", "B-person"],
        ["B-creative-work", "I-creative-work", "E-creative-work", "O", "S-person"],
    ),
    (["I-X", "B-X", "B-X", "O"], ["B-X", "B-X", "B-X", "O"], ["S-X", "S-X", "S-X", "O"]),
]


@pytest.mark.parametrize(("iob1", "bio", "iobes"), CASES)
def test_conversions_and_round_trips(iob1, bio, iobes):
    assert convert_tags(iob1, "BIO") == bio
    assert convert_tags(bio, "IOB1") == iob1  # BIO -> IOB1 round trip
    assert convert_tags(bio, "IOBES") == iobes
    assert convert_tags(iobes, "BIO") == bio
    assert convert_tags(iobes, "IOB1") == iob1
    assert (
        is_valid_sequence(iob1, "IOB1")
        and is_valid_sequence(bio, "BIO")
        and is_valid_sequence(iobes, "IOBES")
    )


def test_spans_hand_computed():
    assert tags_to_spans(["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC"]) == [
        ("PER", 0, 2),
        ("LOC", 3, 5),
        ("LOC", 5, 6),
    ]
    assert tags_to_spans(["S-A", "B-A", "I-A", "E-A", "E-A"]) == [("A", 0, 1), ("A", 1, 4), ("A", 4, 5)]
    assert spans_to_tags([("LOC", 2, 3), ("PER", 0, 2)], 4, "IOB2") == ["B-PER", "I-PER", "B-LOC", "O"]


def test_spans_equal_seqeval_default_mode_on_random_sequences():
    """Our chunking is conlleval's: compare with seqeval's get_entities on messy random input."""
    rng = random.Random(0)
    labels = ["O", "B-A", "I-A", "E-A", "S-A", "B-B", "I-B", "E-B", "S-B"]
    for _ in range(3000):
        tags = [rng.choice(labels) for _ in range(rng.randint(0, 8))]
        expected = [(kind, start, end + 1) for kind, start, end in get_entities(tags)]
        assert tags_to_spans(tags) == expected, tags


def test_random_round_trips_preserve_entities():
    rng = random.Random(1)
    for _ in range(500):
        tags = [rng.choice(["O", "B-A", "I-A", "I-B", "B-B"]) for _ in range(rng.randint(0, 10))]
        spans = tags_to_spans(tags)
        for scheme in ("BIO", "IOB1", "IOBES"):
            converted = convert_tags(tags, scheme)
            assert is_valid_sequence(converted, scheme)
            assert tags_to_spans(converted) == spans


def test_detect_scheme():
    assert detect_scheme([["I-PER", "O"], ["I-LOC", "B-LOC"]]) == "IOB1"
    assert detect_scheme([["B-PER", "I-PER", "O"]]) == "BIO"
    assert detect_scheme([["O"], ["B-PER", "E-PER"]]) == "IOBES"
    assert detect_scheme([["O", "O"]]) == "BIO"
    # a BIO file with a stray I- after O is still BIO (and read leniently, as conlleval does)
    assert detect_scheme([["O", "I-PER"], ["B-LOC"]]) == "BIO"


def test_validity_rules():
    assert not is_valid_sequence(["O", "I-PER"], "BIO")
    assert not is_valid_sequence(["B-PER", "I-LOC"], "BIO")
    assert not is_valid_sequence(["I-PER"], "BIO")
    assert is_valid_sequence(["I-PER", "I-LOC"], "IOB1")
    assert not is_valid_sequence(["O", "B-PER"], "IOB1")
    assert not is_valid_sequence(["I-LOC", "B-PER"], "IOB1")
    assert not is_valid_sequence(["B-PER"], "IOBES")  # an entity left open at the end
    assert not is_valid_sequence(["B-PER", "O"], "IOBES")
    assert not is_valid_sequence(["E-PER"], "IOBES")
    assert is_valid_sequence([], "IOBES")


def test_tag_strings_and_scheme_names():
    assert all(is_valid_tag(t) for t in ["O", "B-PER", "I-creative-work", "E-X", "S-X"])
    assert not any(is_valid_tag(t) for t in ["B_PER", "X-LOC", "B-", "o", "B-P ER", "", "L-PER"])
    assert normalize_scheme("iob2") == "BIO" and normalize_scheme("bioes") == "IOBES"
    with pytest.raises(ValueError, match="unknown tag scheme"):
        normalize_scheme("BILOU")
    assert label_names_for(["PER", "LOC", "PER"], "BIO") == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert label_names_for(["X"], "IOBES") == ["O", "B-X", "I-X", "E-X", "S-X"]


def test_scores_hand_computed():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-LOC"]]
    scores = ner_scores(gold, pred)
    # gold: PER, LOC, ORG; predicted: PER, ORG, LOC(wrong place) -> 2 correct of 3 and 3
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["f1_PER"] == 1.0 and scores["f1_ORG"] == 1.0 and scores["f1_LOC"] == 0.0
    assert scores["token_accuracy"] == pytest.approx(4 / 6)


def test_strict_mode_only_counts_well_formed_entities():
    gold = [["B-PER", "I-PER", "O"]]
    pred = [["I-PER", "I-PER", "O"]]  # conlleval reads an entity here; strict BIO does not
    assert ner_scores(gold, pred)["f1"] == 1.0
    assert ner_scores(gold, pred, scheme="BIO", strict=True)["f1"] == 0.0


def test_scores_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="sentence 0"):
        ner_scores([["O", "O"]], [["O"]])
