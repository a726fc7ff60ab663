"""SQuAD windows and labels: doc_stride, max context, long contexts, offsets into the original text."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bert_core import load_tokenizer
from tasks.data.squad import SquadAnswer, SquadExample
from tasks.decoding.qa import postprocess
from tasks.features.qa import (
    OUTSIDE_CONTEXT,
    QAFeaturizer,
    example_rows,
    max_context_masks,
    window_spans,
)
from tasks.io import DataError, UserError

# Words that the uncased WordPiece vocabulary holds as single tokens, so token i is word i.
WORDS = "red green blue cat dog house river tree stone bird water fire road hill king city ship book".split()


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir):
    return load_tokenizer(tiny_bert_dir)


def example(
    context: str, answer: str | None, question: str = "what is it?", occurrence: int = 0, qid: str = "q"
) -> SquadExample:
    if answer is None:
        return SquadExample(qid, question, context, ())
    start = -1
    for _ in range(occurrence + 1):
        start = context.index(answer, start + 1)
    return SquadExample(qid, question, context, (SquadAnswer(answer, start),))


def build_features(examples, tokenizer, source: str = "<examples>", **options):
    return QAFeaturizer(**options)(examples, tokenizer, source)


def word_context(num_words: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(WORDS) for _ in range(num_words)]


def label_text(feature, context: str) -> str:
    return context[feature.offsets[feature.start_position, 0] : feature.offsets[feature.end_position, 1]]


def oracle_logits(features, peaks: dict[int, tuple[int, int, float]]):
    """Zero logits, except start and end logits of the given height at (start, end) in the given windows."""
    starts, ends = [], []
    for index, feature in enumerate(features):
        start, end = np.zeros(len(feature), np.float32), np.zeros(len(feature), np.float32)
        if index in peaks:
            s, e, height = peaks[index]
            start[s] = end[e] = height
        starts.append(start)
        ends.append(end)
    return starts, ends


# ----------------------------------------------------------------------------------------------
# Windows


def test_doc_stride_is_the_step_between_window_starts():
    assert window_spans(10, room=4, doc_stride=3) == [(0, 4), (3, 4), (6, 4)]
    # a step longer than a window never skips tokens: the windows just stop overlapping
    assert window_spans(10, room=4, doc_stride=8) == [(0, 4), (4, 4), (8, 2)]
    assert window_spans(3, room=4, doc_stride=2) == [(0, 3)]


def test_windows_start_doc_stride_tokens_apart(tokenizer):
    words = word_context(100)
    features, _ = build_features(
        [example(" ".join(words), None)], tokenizer, max_seq_length=32, max_query_length=8, doc_stride=10
    )
    # [CLS] what is it ? [SEP]: 6 tokens before the context, 25 context tokens per window
    first_context_token = [np.flatnonzero(f.offsets[:, 0] != OUTSIDE_CONTEXT)[0] for f in features]
    assert first_context_token == [6] * len(features)
    word_starts = [int(f.offsets[6, 0]) for f in features]
    word_index = {start: i for i, start in enumerate(np.cumsum([0] + [len(w) + 1 for w in words[:-1]]))}
    assert [word_index[s] for s in word_starts] == [0, 10, 20, 30, 40, 50, 60, 70, 80]
    assert all(len(f) <= 32 for f in features) and len(features[-1]) == 6 + 20 + 1  # the last: words 80..99


def test_max_context_by_hand():
    masks = max_context_masks([(0, 4), (3, 4), (6, 4)])
    # token 3: min(3, 0) = 0 in window 0 and min(0, 3) = 0 in window 1: the tie goes to the first
    assert [m.tolist() for m in masks] == [[True] * 4, [False, True, True, True], [False, True, True, True]]
    # the 0.01 * length term prefers the longer window on equal context
    masks = max_context_masks([(0, 5), (2, 3)])
    assert masks[1].tolist() == [False, False, False]


def test_bad_window_options():
    with pytest.raises(UserError, match="max_seq_length=40 leaves no room for the context"):
        QAFeaturizer(max_seq_length=40, max_query_length=64, doc_stride=128)
    with pytest.raises(UserError, match="doc_stride"):
        QAFeaturizer(384, 64, 0)
    with pytest.raises(UserError, match="max_query_length must be at least 1"):
        QAFeaturizer(384, 0)


def test_the_featurizer_is_its_cache_key():
    featurizer = QAFeaturizer(128, 16, 32, with_labels=True)
    assert featurizer.cache_key() == {
        "max_seq_length": 128,
        "max_query_length": 16,
        "doc_stride": 32,
        "with_labels": True,
        "version_2_with_negative": False,
    }
    assert featurizer == QAFeaturizer(128, 16, 32, True) != QAFeaturizer(128, 16, 32)
    with pytest.raises(AttributeError):
        featurizer.doc_stride = 64  # frozen: a cached table always matches its featurizer


def test_batch_columns_keep_the_split_wide_example_numbers(tokenizer):
    words = word_context(60)
    rows = list(example_rows([example(" ".join(words), None), example("The cat sat.", None)]))
    batch = {key: [row[key] for row in rows] for key in rows[0]}
    batch["example_index"] = [7, 8]  # a later batch of the split
    columns = QAFeaturizer(32, 8, 10).batch_step(tokenizer, "dev.jsonl")(batch)
    assert columns["example_index"] == [7] * (len(columns["example_index"]) - 1) + [8]
    assert "start_positions" not in columns  # no labels but for training


# ----------------------------------------------------------------------------------------------
# Labels


def test_answer_crossing_a_window_edge(tokenizer):
    words = word_context(60, seed=1)
    words[24:29] = ["golden", "bridge", "over", "the", "sea"]
    context = " ".join(words)
    ex = example(context, "golden bridge over the sea")
    features, stats = build_features(
        [ex], tokenizer, max_seq_length=32, max_query_length=8, doc_stride=10, with_labels=True
    )
    # 32 - 6 - 1 (final [SEP]) = 25 context tokens: windows over tokens 0-24, 10-34, 20-44, 30-54, 40-59
    assert len(features) == 5
    assert (features[0].start_position, features[0].end_position) == (0, 0)  # holds only "golden"
    assert (
        label_text(features[1], context) == label_text(features[2], context) == "golden bridge over the sea"
    )
    assert features[1].start_position == 6 + 24 - 10
    assert all((f.start_position, f.end_position) == (0, 0) for f in features[3:])
    assert stats.answers_outside_window == 3

    # Window 0 ends on "golden", scored higher there (4.5 + 4.5) than the full answer in window 1
    # (4 + 4); but "golden" has more context in window 1 (max-context rule), so the full answer wins.
    starts, ends = oracle_logits(features, {0: (6 + 24, 6 + 24, 4.5), 1: (6 + 14, 6 + 18, 4.0)})
    (prediction,) = postprocess([ex], features, starts, ends)
    assert prediction.text == "golden bridge over the sea"
    assert context[prediction.start : prediction.end] == prediction.text


def test_context_of_more_than_2000_tokens(tokenizer):
    words = word_context(2400, seed=2)
    words[2300:2302] = ["silver", "moon"]
    context = " ".join(words)
    ex = example(context, "silver moon")
    features, _ = build_features([ex], tokenizer, max_seq_length=384, doc_stride=128, with_labels=True)
    room = 384 - 6 - 1
    assert len(features) == len(window_spans(2400, room, 128)) == 17
    covered = np.zeros(2400, dtype=int)
    max_context = np.zeros(2400, dtype=int)
    for feature in features:
        assert len(feature) <= 384
        context_positions = np.flatnonzero(feature.offsets[:, 0] != OUTSIDE_CONTEXT)
        word_ids = [context[: feature.offsets[p, 0]].count(" ") for p in context_positions]
        covered[word_ids] += 1
        max_context[np.array(word_ids)[feature.max_context[context_positions]]] += 1
    assert covered.min() >= 1 and (max_context == 1).all()  # every token seen, best in exactly one window
    labelled = [f for f in features if f.start_position]
    assert labelled and all(label_text(f, context) == "silver moon" for f in labelled)

    peaks = {i: (f.start_position, f.end_position, 5.0) for i, f in enumerate(features) if f.start_position}
    (prediction,) = postprocess([ex], features, *oracle_logits(features, peaks))
    assert (prediction.text, prediction.start) == ("silver moon", ex.answers[0].start)


@pytest.mark.parametrize(
    ("answer", "occurrence"),
    [("café   de Zoë", 0), ("北京大学", 0), ("Zoe\u0308", 0), ("Straße", 0), ("ﬁne", 0), ("de", 1)],
)
def test_offsets_keep_the_original_text(tokenizer, answer, occurrence):
    # repeated spaces, accents (composed and decomposed), CJK (one token per character), ligatures
    context = "Le  café   de Zoë est à 北京大学,  près de Zoe\u0308 et de la Straße  ﬁne."
    ex = example(context, answer, occurrence=occurrence)
    features, _ = build_features([ex], tokenizer, max_seq_length=64, max_query_length=8, with_labels=True)
    (feature,) = features
    assert label_text(feature, context) == answer
    starts, ends = oracle_logits(features, {0: (feature.start_position, feature.end_position, 5.0)})
    (prediction,) = postprocess([ex], features, starts, ends)
    assert prediction.text == answer and (prediction.start, prediction.end) == (
        ex.answers[0].start,
        ex.answers[0].end,
    )


def test_uncased_tokens_but_original_answer_text(tokenizer):
    ex = example("Der Bürgermeister von München sprach.", "München")
    (feature,), _ = build_features([ex], tokenizer, max_seq_length=64, max_query_length=8, with_labels=True)
    tokens = tokenizer.convert_ids_to_tokens(
        feature.input_ids[feature.start_position : feature.end_position + 1].tolist()
    )
    assert "".join(t.removeprefix("##") for t in tokens) == "munchen"  # lower-cased, accents stripped
    assert label_text(feature, ex.context) == "München"


# ----------------------------------------------------------------------------------------------
# Bad input


def test_long_question_is_cut_to_max_query_length(tokenizer):
    question = " ".join(word_context(100, seed=3)) + "?"
    ex = example("The cat sat on the mat.", "the mat", question=question)
    features, stats = build_features(
        [ex], tokenizer, max_seq_length=80, max_query_length=64, with_labels=True
    )
    assert stats.truncated_questions == 1
    (feature,) = features
    assert (feature.token_type_ids == 0).sum() == 1 + 64 + 1  # [CLS], 64 question tokens, [SEP]
    assert label_text(feature, ex.context) == "the mat"


def test_text_without_tokens_is_an_error(tokenizer):
    with pytest.raises(DataError, match=r"dev.json \(example q\): the question has no tokens"):
        build_features([example("Some context.", None, question="\u200b")], tokenizer, source="dev.json")
    with pytest.raises(DataError, match=r"\(example q\): the context has no tokens"):
        build_features([SquadExample("q", "why?", "\u200b\u200b", None)], tokenizer)


def test_training_labels_need_answers(tokenizer):
    with pytest.raises(DataError, match="training needs them"):
        build_features([SquadExample("q", "why?", "Because.", None)], tokenizer, with_labels=True)
    unanswerable = example("The cat sat.", None)
    with pytest.raises(DataError, match="unanswerable question in SQuAD v1.1 training data"):
        build_features([unanswerable], tokenizer, with_labels=True)
    (feature,), _ = build_features([unanswerable], tokenizer, with_labels=True, version_2_with_negative=True)
    assert (feature.start_position, feature.end_position) == (0, 0)
