"""Constrained decoding: the best valid sequence, checked against brute force; never an invalid one.
Argmax decoding: each word's best label, invalid sequences included."""

import itertools

import numpy as np
import pytest

from tasks.data.conll import is_valid_sequence, label_names_for
from tasks.decoding.tagging import (
    TaggedSentence,
    WindowOutput,
    WordScores,
    argmax_path,
    decode_sentence,
    fill_untokenized,
    transition_constraints,
    viterbi,
)


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


LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def test_argmax_gives_o_i_per_where_viterbi_gives_a_valid_sequence():
    # word 1: I-PER 0.50 beats B-PER 0.30 and O 0.20; after O, viterbi must pick B-PER or O:
    # O B-PER scores 0.9 * 0.3 = 0.27 > O O at 0.9 * 0.2 = 0.18
    probabilities = np.array([[0.90, 0.04, 0.02, 0.02, 0.02], [0.20, 0.30, 0.50, 0.00, 0.00]])
    window = WordScores(np.array([0, 1]), np.log(probabilities + 1e-12))
    masks = transition_constraints(LABELS, "BIO")
    argmax = decode_sentence(2, [window], LABELS, None, "argmax")
    assert argmax == ["O", "I-PER"]
    assert not is_valid_sequence(argmax, "BIO")
    assert decode_sentence(2, [window], LABELS, masks, "viterbi") == ["O", "B-PER"]
    assert decode_sentence(2, [window], LABELS, masks) == ["O", "B-PER"]  # the default


def test_argmax_equals_per_word_argmax_and_fills_untokenized_words():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(7, len(LABELS)))
    # words 2 and 5 have no sub-token; two windows share the others, in any order
    labelled = [0, 1, 3, 4, 6]
    windows = [
        WordScores(np.array([3, 4, 6]), scores[[3, 4, 6]]),
        WordScores(np.array([0, 1]), scores[[0, 1]]),
    ]
    tags = decode_sentence(7, windows, LABELS, None, "argmax")
    per_word: list[str | None] = [None] * 7
    for word in labelled:
        per_word[word] = LABELS[int(np.argmax(scores[word]))]
    assert tags == fill_untokenized(per_word)
    assert [tags[w] for w in labelled] == [LABELS[i] for i in argmax_path(scores[labelled])]
    # an untokenized word between two I-PER of argmax joins them; after O before I-PER it is O
    inside = np.log(np.array([[0.1, 0.1, 0.6, 0.1, 0.1]]))
    outside = np.log(np.array([[0.6, 0.1, 0.1, 0.1, 0.1]]))
    joined = [WordScores(np.array([0]), inside), WordScores(np.array([2]), inside)]
    assert decode_sentence(3, joined, LABELS, None, "argmax") == ["I-PER", "I-PER", "I-PER"]
    apart = [WordScores(np.array([0]), outside), WordScores(np.array([2]), inside)]
    assert decode_sentence(3, apart, LABELS, None, "argmax") == ["O", "O", "I-PER"]
    assert decode_sentence(2, [], LABELS, None, "argmax") == ["O", "O"]  # no word has a sub-token


def test_unknown_decoding_is_an_error():
    window = WordScores(np.array([0]), np.zeros((1, len(LABELS))))
    with pytest.raises(ValueError, match="decoding must be one of viterbi, argmax, not 'greedy'"):
        decode_sentence(1, [window], LABELS, None, "greedy")
    with pytest.raises(ValueError, match="viterbi decoding needs"):
        decode_sentence(1, [window], LABELS, None, "viterbi")


def test_window_outputs_of_a_batch_keep_only_labelled_words():
    # two windows padded to 4 tokens: the first labels words 0 and 1 at positions 1 and 2, the
    # second word 2 at position 1; padding (-100) in word_positions is dropped
    log_probs = np.log(np.random.default_rng(3).dirichlet(np.ones(len(LABELS)), size=(2, 4)))
    batch = {
        "labels": np.array([[-100, 1, 2, -100], [-100, 0, -100, -100]]),
        "word_positions": np.array([[1, 2], [1, -100]]),
        "word_indices": np.array([[0, 1], [2, -100]]),
        "sentence": np.array([7, 7]),
        "feature_index": np.array([10, 11]),
    }
    assert set(WindowOutput.COLUMNS) == set(batch)
    items = WindowOutput.from_batch(log_probs, [1.5, 0.25], batch)
    assert [(sentence, feature) for sentence, feature, _ in items] == [(7, 10), (7, 11)]
    assert all(type(value) is int for sentence, feature, _ in items for value in (sentence, feature))
    first, second = (output for _, _, output in items)
    assert first.scores.word_indices.tolist() == [0, 1]
    np.testing.assert_array_equal(first.scores.scores, log_probs[0, [1, 2]])
    assert (first.loss_sum, first.labelled) == (1.5, 2)
    assert second.scores.word_indices.tolist() == [2] and (second.loss_sum, second.labelled) == (0.25, 1)


def test_a_sentence_is_merged_from_all_its_windows_with_their_losses():
    rng = np.random.default_rng(4)
    scores = np.log(rng.dirichlet(np.ones(len(LABELS)), size=5))
    windows = [  # words 0-2 in one window, 3-4 in the next (word order of windows does not matter)
        WindowOutput(WordScores(np.array([3, 4]), scores[[3, 4]]), loss_sum=2.0, labelled=2),
        WindowOutput(WordScores(np.array([0, 1, 2]), scores[[0, 1, 2]]), loss_sum=1.0, labelled=3),
    ]
    masks = transition_constraints(LABELS, "BIO")
    for decoding in ("viterbi", "argmax"):
        merged = TaggedSentence.from_windows(5, windows, LABELS, "BIO", decoding)
        expected = decode_sentence(5, [w.scores for w in windows], LABELS, masks, decoding)
        assert merged == TaggedSentence(expected, 3.0, 5)
    assert is_valid_sequence(TaggedSentence.from_windows(5, windows, LABELS, "BIO", "viterbi").tags, "BIO")
