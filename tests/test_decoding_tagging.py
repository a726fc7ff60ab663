"""Constrained decoding: the best valid sequence, checked against brute force; never an invalid one."""

import itertools

import numpy as np
import pytest

from tasks.data.conll import is_valid_sequence, label_names_for
from tasks.decoding.tagging import fill_untokenized, transition_constraints, viterbi


def brute_force(scores: np.ndarray, labels: list[str], scheme: str) -> tuple[float, list[str]]:
    best = (-np.inf, [])
    for path in itertools.product(range(len(labels)), repeat=scores.shape[0]):
        tags = [labels[i] for i in path]
        if is_valid_sequence(tags, scheme):
            total = float(sum(scores[step, label] for step, label in enumerate(path)))
            if total > best[0]:
                best = (total, tags)
    return best


@pytest.mark.parametrize("scheme", ["BIO", "IOB1", "IOBES"])
def test_viterbi_equals_brute_force_on_small_cases(scheme):
    labels = label_names_for(["A", "B"], scheme)
    masks = transition_constraints(labels, scheme)
    rng = np.random.default_rng(0)
    for _ in range(40):
        length = int(rng.integers(1, 5))
        scores = np.log(rng.dirichlet(np.ones(len(labels)), size=length))
        decoded = [labels[i] for i in viterbi(scores, *masks)]
        best_total, best_tags = brute_force(scores, labels, scheme)
        assert is_valid_sequence(decoded, scheme)
        total = sum(scores[step, labels.index(tag)] for step, tag in enumerate(decoded))
        assert total == pytest.approx(best_total)
        assert decoded == best_tags  # ties have probability zero with continuous scores


@pytest.mark.parametrize("scheme", ["BIO", "IOB1", "IOBES"])
def test_never_invalid_even_when_invalid_tags_score_best(scheme):
    labels = label_names_for(["PER", "LOC", "ORG"], scheme)
    masks = transition_constraints(labels, scheme)
    rng = np.random.default_rng(1)
    inside = [i for i, label in enumerate(labels) if label.startswith(("I-", "E-"))]
    for _ in range(200):
        length = int(rng.integers(1, 30))
        scores = rng.normal(size=(length, len(labels)))
        scores[:, inside] += 3.0  # push the decoder towards I-/E- everywhere, including after O
        decoded = [labels[i] for i in viterbi(scores, *masks)]
        assert is_valid_sequence(decoded, scheme), decoded


def test_hand_case_i_after_o_is_repaired_by_the_search_not_by_a_patch():
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    masks = transition_constraints(labels, "BIO")
    # argmax per word would give O, I-PER, I-PER (invalid); the best valid path is B-PER I-PER
    scores = np.log(
        np.array(
            [
                [0.90, 0.02, 0.04, 0.02, 0.02],
                [0.30, 0.25, 0.41, 0.02, 0.02],
                [0.10, 0.02, 0.84, 0.02, 0.02],
            ]
        )
    )
    assert [labels[i] for i in viterbi(scores, *masks)] == ["O", "B-PER", "I-PER"]
    # I-LOC cannot follow B-PER: B-PER then anything scores 0.95 * 0.01 = 0.0095, below
    # B-LOC I-LOC at 0.02 * 0.96 = 0.0192, so the search changes the first word instead
    scores = np.log(np.array([[0.01, 0.95, 0.01, 0.02, 0.01], [0.01, 0.01, 0.01, 0.01, 0.96]]))
    assert [labels[i] for i in viterbi(scores, *masks)] == ["B-LOC", "I-LOC"]


def test_empty_sentence_decodes_to_nothing():
    masks = transition_constraints(["O", "B-X", "I-X"], "BIO")
    assert viterbi(np.zeros((0, 3)), *masks) == []


def test_fill_untokenized_keeps_sequences_valid():
    assert fill_untokenized(["B-PER", None, "I-PER"]) == ["B-PER", "I-PER", "I-PER"]
    assert fill_untokenized(["B-PER", None, "B-PER"]) == ["B-PER", "O", "B-PER"]
    assert fill_untokenized(["B-PER", None, "I-LOC"]) == ["B-PER", "O", "I-LOC"]
    assert fill_untokenized([None, "O", None]) == ["O", "O", "O"]
    assert fill_untokenized(["B-X", None, None, "E-X"]) == ["B-X", "I-X", "I-X", "E-X"]
    assert fill_untokenized(["S-X", None, "S-X"]) == ["S-X", "O", "S-X"]
