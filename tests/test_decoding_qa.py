"""Post-processing rules on hand-made windows and logits (no model, no tokenizer)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from tasks.data.squad import SquadExample
from tasks.decoding.qa import QAContext, QADecoder, postprocess
from tasks.features.qa import OUTSIDE_CONTEXT, QAFeature
from tasks.io import UserError

CONTEXT = "Zero one two three four five six seven eight nine"
WORD_SPANS = [m.span() for m in re.finditer(r"\S+", CONTEXT)]
QUESTION_TOKENS = 2  # [CLS] q1 q2 [SEP] come before the context: context word i is position i + 4
P = 4


def window(words: range, example_index: int = 0, spans: list[tuple[int, int]] = WORD_SPANS) -> QAFeature:
    """[CLS] q q [SEP] words... [SEP], with each word one token, all of max context."""
    length = P + len(words) + 1
    offsets = np.full((length, 2), OUTSIDE_CONTEXT, dtype=np.int32)
    offsets[P : P + len(words)] = [spans[w] for w in words]
    is_max = np.zeros(length, dtype=bool)
    is_max[P : P + len(words)] = True
    ids = np.arange(length, dtype=np.int32)
    types = (np.arange(length) >= P).astype(np.int8)
    return QAFeature(example_index, 0, ids, types, offsets, is_max)


def logits(length: int, values: dict[int, float]) -> np.ndarray:
    """-10 everywhere except at the given positions."""
    array = np.full(length, -10.0, dtype=np.float32)
    for position, value in values.items():
        array[position] = value
    return array


EXAMPLE = SquadExample("q", "which?", CONTEXT, None)


def decode(features, starts, ends, **options):
    (prediction,) = postprocess([EXAMPLE], features, starts, ends, **options)
    return prediction


def test_best_span_by_start_plus_end_sliced_from_the_original_text():
    feature = window(range(10))
    n = len(feature)
    # start "two" (2.0) + end "three" (3.0) = 5.0; the higher end "one" (3.2) comes before both starts
    prediction = decode(
        [feature], [logits(n, {P + 2: 2.0, P + 5: 1.5})], [logits(n, {P + 3: 3.0, P + 1: 3.2})]
    )
    assert (prediction.text, prediction.start, prediction.end) == ("two three", 9, 18)
    assert prediction.score == pytest.approx(5.0)


def test_end_before_start_is_invalid():
    feature = window(range(10))
    n = len(feature)
    # the best start ("six", 5.0) comes after the best end ("two", 5.0): the best valid pair wins,
    # six + seven (5.0 + 1.5) before one + two (1.0 + 5.0)
    prediction = decode(
        [feature], [logits(n, {P + 6: 5.0, P + 1: 1.0})], [logits(n, {P + 2: 5.0, P + 7: 1.5})]
    )
    assert (prediction.text, prediction.score) == ("six seven", 6.5)


def test_max_answer_length_in_tokens():
    feature = window(range(10))
    n = len(feature)
    starts, ends = [logits(n, {P + 1: 5.0, P + 6: 1.0})], [logits(n, {P + 6: 5.0, P + 1: 0.5})]
    assert decode([feature], starts, ends).text == "one two three four five six"  # 6 tokens
    assert (
        decode([feature], starts, ends, max_answer_length=5).text == "six"
    )  # 1.0 + 5.0 beats one (5.0 + 0.5)
    assert decode([feature], starts, ends, max_answer_length=6).text == "one two three four five six"


def test_spans_outside_the_context_are_ignored():
    feature = window(range(10))
    n = len(feature)
    # [CLS] (0), the question (1, 2), [SEP]s: highest logits, never an answer in v1.1
    starts = logits(n, {0: 9.0, 1: 8.0, 3: 7.0, n - 1: 9.0, P + 4: 1.0})
    ends = logits(n, {0: 9.0, 2: 8.0, n - 1: 9.0, P + 4: 1.0})
    assert decode([feature], [starts], [ends]).text == "four"


def test_n_best_size_limits_the_candidates_and_the_list():
    feature = window(range(10))
    n = len(feature)
    # top start "seven" and top end "three" do not pair; the second-best start and end do
    starts, ends = [logits(n, {P + 7: 5.0, P + 2: 4.0})], [logits(n, {P + 3: 5.0, P + 8: 1.0})]
    assert decode([feature], starts, ends, n_best_size=1).text == ""  # no valid pair among 1 x 1
    prediction = decode([feature], starts, ends, n_best_size=2)
    assert prediction.text == "two three"
    # valid pairs: two three (9), seven eight (6), two ... eight (5): the list keeps 2
    assert [e["text"] for e in prediction.nbest] == ["two three", "seven eight"]
    assert prediction.nbest[0]["text"] == "two three"
    totals = [e["start_logit"] + e["end_logit"] for e in prediction.nbest]
    assert totals == sorted(totals, reverse=True)
    assert sum(e["probability"] for e in prediction.nbest) == pytest.approx(1.0)
    assert prediction.nbest[0]["probability"] == pytest.approx(1 / (1 + math.exp(totals[1] - totals[0])))
    assert len(decode([feature], starts, ends, n_best_size=20).nbest) == 20


def test_start_token_must_have_max_context_in_its_window():
    # words 0-6 and 4-9: "five" and "six" have their max context in window 1, "four" in window 0
    first, second = window(range(0, 7)), window(range(4, 10))
    first.max_context[P + 5 : P + 7] = False
    second.max_context[P] = False
    # window 0 scores "five" at 12, but only window 1's "five" (4) may start an answer
    starts = [logits(len(first), {P + 5: 6.0}), logits(len(second), {P + 1: 2.0})]
    ends = [logits(len(first), {P + 5: 6.0}), logits(len(second), {P + 1: 2.0})]
    prediction = decode([first, second], starts, ends)
    assert (prediction.text, prediction.score) == ("five", 4.0)


def test_equal_texts_count_once_in_the_nbest_list():
    context = "one one one"
    spans = [m.span() for m in re.finditer(r"\S+", context)]
    feature = window(range(3), spans=spans)
    n = len(feature)
    flat = np.zeros(n, dtype=np.float32)
    (prediction,) = postprocess([SquadExample("q", "?", context, None)], [feature], [flat], [flat])
    # six valid spans, three distinct texts
    assert sorted(e["text"] for e in prediction.nbest) == ["one", "one one", "one one one"]


def test_windows_without_logits_are_skipped():
    other = SquadExample("r", "which?", CONTEXT, None)
    features = [window(range(10)), window(range(10), example_index=1)]
    n = len(features[0])
    predictions = postprocess(
        [EXAMPLE, other], features, [None, logits(n, {P: 1.0})], [None, logits(n, {P: 1.0})]
    )
    assert [(p.id, p.text) for p in predictions] == [("r", "Zero")]


# ----------------------------------------------------------------------------------------------
# SQuAD v2.0


def test_null_score_is_the_minimum_cls_score_over_windows():
    first, second = window(range(0, 7)), window(range(4, 10))
    first.max_context[P + 5 :] = False
    second.max_context[P] = False
    starts = [logits(len(first), {0: 2.0, P + 1: 1.5}), logits(len(second), {0: 1.0})]
    ends = [logits(len(first), {0: 2.0, P + 2: 1.5}), logits(len(second), {0: 0.5})]
    # null = min(2 + 2, 1 + 0.5) = 1.5; best span "one two" = 3.0; odds = 1.5 - 3.0 = -1.5
    prediction = decode([first, second], starts, ends, version_2_with_negative=True)
    assert (prediction.text, prediction.null_odds, prediction.score) == ("one two", -1.5, 3.0)
    null_entry = next(e for e in prediction.nbest if e["text"] == "")
    assert (null_entry["start_logit"], null_entry["end_logit"], null_entry["start"]) == (1.0, 0.5, None)

    # null when odds > threshold (strictly)
    options = {"version_2_with_negative": True}
    assert decode([first, second], starts, ends, null_score_diff_threshold=-1.5, **options).text == "one two"
    null = decode([first, second], starts, ends, null_score_diff_threshold=-1.6, **options)
    assert (null.text, null.start, null.end, null.score, null.null_odds) == ("", None, None, 1.5, -1.5)
    # the n-best list still ranks spans, so the null answer can be overridden later
    assert null.nbest[0]["text"] == "one two"


def test_cls_wins_only_in_v2():
    feature = window(range(10))
    n = len(feature)
    starts, ends = [logits(n, {0: 6.0, P + 3: 1.0})], [logits(n, {0: 6.0, P + 3: 1.0})]
    assert decode([feature], starts, ends).text == "three"  # v1.1: always a span
    v2 = decode([feature], starts, ends, version_2_with_negative=True)
    assert v2.text == "" and v2.null_odds == pytest.approx(10.0)
    assert v2.nbest[0]["text"] == "" and v2.nbest[0]["probability"] > 0.99


def test_no_valid_span_in_v2_is_null_with_infinite_odds():
    feature = window(range(10))
    n = len(feature)
    starts, ends = [logits(n, {P + 7: 5.0})], [logits(n, {P + 3: 5.0})]
    prediction = decode([feature], starts, ends, n_best_size=1, version_2_with_negative=True)
    assert prediction.text == "" and math.isinf(prediction.null_odds)
    assert [e["text"] for e in prediction.nbest] == [""]


def test_an_answer_starting_or_ending_inside_a_word_is_widened_to_whole_words():
    context = "The Eiffel Tower, in Paris."
    # sub-tokens as WordPiece cuts them: the, e, ##iffel, tower, ",", in, paris, "."
    pieces = [(0, 3), (4, 5), (5, 10), (11, 16), (16, 17), (18, 20), (21, 26), (26, 27)]
    feature = window(range(len(pieces)), spans=pieces)
    n = len(feature)
    example = SquadExample("q", "which?", context, None)
    # the best span starts at "##iffel" (mid-word) and ends at "tower"
    (prediction,) = postprocess([example], [feature], [logits(n, {P + 2: 5.0})], [logits(n, {P + 3: 5.0})])
    assert (prediction.text, prediction.start, prediction.end) == ("Eiffel Tower", 4, 16)
    # punctuation next to a word is not pulled in; a span ending at "e" grows to the word's end
    (prediction,) = postprocess([example], [feature], [logits(n, {P + 6: 5.0})], [logits(n, {P + 6: 5.0})])
    assert prediction.text == "Paris"
    (prediction,) = postprocess([example], [feature], [logits(n, {P + 1: 5.0})], [logits(n, {P + 1: 5.0})])
    assert prediction.text == "Eiffel"


# ----------------------------------------------------------------------------------------------
# What the module holds: the decoder and the split's context


def test_decoder_options_are_checked_when_built():
    with pytest.raises(UserError, match=r"n_best_size \(0\) and max_answer_length \(30\) must be >= 1"):
        QADecoder(n_best_size=0)
    with pytest.raises(UserError, match="must be >= 1"):
        QADecoder(max_answer_length=0)


def test_decoder_takes_each_window_as_start_and_end_logits():
    first, second = window(range(0, 6)), window(range(5, 10), example_index=0)
    starts = [logits(len(first), {P + 1: 2.0}), logits(len(second), {P + 2: 3.0})]
    ends = [logits(len(first), {P + 2: 2.0}), logits(len(second), {P + 3: 3.0})]
    example = SquadExample("q", "which?", CONTEXT, None)
    prediction = QADecoder(n_best_size=5)(example, [first, second], list(zip(starts, ends, strict=True)))
    assert prediction == postprocess([example], [first, second], starts, ends, n_best_size=5)[0]
    assert prediction.text == "seven eight"


def test_context_hands_out_each_questions_consecutive_windows():
    features = [window(range(3), example_index=e) for e in (0, 0, 2, 2, 2)]
    questions = [SquadExample(str(i), "which?", CONTEXT, None) for i in range(3)]
    reads = []

    def read_windows(first: int, end: int):
        reads.append((first, end))
        return features[first:end]

    context = QAContext(questions.__getitem__, [2, 0, 3], read_windows)
    assert context.example(2).id == "2"
    assert [len(context.windows_of(e)) for e in range(3)] == [2, 0, 3]
    assert reads == [(0, 2), (2, 2), (2, 5)]
