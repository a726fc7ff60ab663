"""Pre-training inputs: masking statistics, whole words and spans, NSP pairing, packing."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tasks.data.corpus import split_sentences
from tasks.features.pretraining import (
    SPECIAL_WORD,
    mask_sequence,
    nsp_sequences,
    packed_sequences,
    sample_span_length,
    span_length_probabilities,
)

CLS, SEP, MASK, VOCAB = 101, 102, 103, 30522


def sequence_of_words(word_lengths: list[int], first_id: int = 2000) -> tuple[list[int], list[int]]:
    """[CLS] words [SEP] [PAD] [PAD]: token ids count up from first_id; word numbers from 0."""
    ids, words = [CLS], [SPECIAL_WORD]
    for word, length in enumerate(word_lengths):
        for _ in range(length):
            ids.append(first_id + len(ids))
            words.append(word)
    ids += [SEP, 0, 0]
    words += [SPECIAL_WORD, -100, -100]  # -100: the collator's padding of word ids
    return ids, words


def draw(ids, words, masking, draws=2000, max_predictions=1000, seed=0):
    rng = np.random.default_rng(seed)
    return [mask_sequence(ids, words, rng, MASK, VOCAB, 0.15, max_predictions, masking) for _ in range(draws)]


def test_token_masking_statistics():
    ids, words = sequence_of_words([1] * 200)
    results = draw(ids, words, "token")
    chosen = np.array([len(r.positions) for r in results])
    assert chosen.mean() / 200 == pytest.approx(0.15, abs=0.01)
    outcomes = {"mask": 0, "same": 0, "random": 0}
    for r in results:
        assert r.labels == [ids[p] for p in r.positions]
        for p in r.positions:
            assert words[p] >= 0  # never [CLS], [SEP] or padding
            new = r.input_ids[p]
            outcomes["mask" if new == MASK else "same" if new == ids[p] else "random"] += 1
        unchosen = set(range(len(ids))) - set(r.positions)
        assert all(r.input_ids[p] == ids[p] for p in unchosen)
    total = sum(outcomes.values())
    assert outcomes["mask"] / total == pytest.approx(0.8, abs=0.02)
    assert outcomes["same"] / total == pytest.approx(0.1, abs=0.02)
    assert outcomes["random"] / total == pytest.approx(0.1, abs=0.02)
    # every position is chosen about equally often
    counts = np.bincount([p for r in results for p in r.positions], minlength=len(ids))[1:201]
    assert counts.min() > 0.5 * counts.mean()


def test_at_most_max_predictions_and_at_least_one():
    ids, words = sequence_of_words([1] * 200)
    assert all(len(r.positions) == 20 for r in draw(ids, words, "token", draws=50, max_predictions=20))
    ids, words = sequence_of_words([1, 1])
    assert all(len(r.positions) == 1 for r in draw(ids, words, "token", draws=50))


def test_whole_word_masking_takes_every_piece_of_a_word():
    lengths = [1, 2, 3, 1, 4, 2] * 30  # 390 tokens in 180 words
    ids, words = sequence_of_words(lengths)
    results = draw(ids, words, "whole_word", draws=1000)
    real = sum(lengths)
    assert np.mean([len(r.positions) for r in results]) / real == pytest.approx(0.15, abs=0.01)
    positions_of = {}
    for position, word in enumerate(words):
        if word >= 0:
            positions_of.setdefault(word, []).append(position)
    for r in results:
        chosen = set(r.positions)
        for word in {words[p] for p in chosen}:
            assert set(positions_of[word]) <= chosen


def test_span_masking_takes_contiguous_whole_words_treated_alike():
    lengths = [1, 2, 1, 1, 3] * 60  # 480 tokens in 300 words
    ids, words = sequence_of_words(lengths)
    results = draw(ids, words, "span", draws=500)
    assert np.mean([len(r.positions) for r in results]) / sum(lengths) == pytest.approx(0.15, abs=0.01)
    for r in results:
        chosen = set(r.positions)
        masked_words = sorted({words[p] for p in chosen})
        for word in masked_words:
            assert all(p in chosen for p, w in enumerate(words) if w == word)
    # spans: the masked word numbers come in runs; within a run every token has the same fate
    # (all [MASK], all kept, or all random) unless two spans happen to touch
    same_fate = 0
    runs = 0
    for r in results:
        masked_words = sorted({words[p] for p in r.positions})
        run = [masked_words[0]]
        for word in masked_words[1:] + [None]:
            if word is not None and word == run[-1] + 1:
                run.append(word)
                continue
            fates = {
                "mask" if r.input_ids[p] == MASK else "same" if r.input_ids[p] == ids[p] else "random"
                for p, w in enumerate(words)
                if w in run
            }
            runs += 1
            same_fate += len(fates) == 1
            run = [word]
    assert same_fate / runs > 0.9


def test_masked_spans_are_about_spanberts_length():
    """The spans actually masked (not only the sampler): at 512 one-token words with Google's cap
    of 77, runs of masked positions average close to SpanBERT's 3.8 words."""
    ids, words = sequence_of_words([1] * 512)
    runs = []
    for r in draw(ids, words, "span", draws=500, max_predictions=77):
        run = 1
        for a, b in zip(r.positions, r.positions[1:]):
            if b == a + 1:
                run += 1
            else:
                runs.append(run)
                run = 1
        runs.append(run)
    runs = np.array(runs)
    assert 3.4 < runs.mean() < 4.2
    assert (runs == 1).mean() < 0.28


def test_span_lengths_follow_the_clipped_geometric():
    rng = np.random.default_rng(0)
    lengths = np.array([sample_span_length(rng) for _ in range(20000)])
    assert lengths.min() == 1 and lengths.max() == 10
    expected = span_length_probabilities(0.2, 10)
    observed = np.bincount(lengths, minlength=11)[1:] / len(lengths)
    np.testing.assert_allclose(observed, expected, atol=0.01)
    assert lengths.mean() == pytest.approx(3.8, abs=0.1)  # SpanBERT's mean span length
    assert expected[0] == pytest.approx(0.2 / (1 - 0.8**10))


def documents_of(lengths: list[list[int]]):
    """Documents of sentences; token id encodes (document, sentence, position)."""
    docs, word = [], 0
    for d, sentences in enumerate(lengths):
        doc = []
        for s, n in enumerate(sentences):
            doc.append([(100000 * (d + 1) + 1000 * s + i, word + i) for i in range(n)])
            word += n
        docs.append(doc)
    return docs


def test_nsp_pairs_follow_googles_construction():
    # long documents: Google's rule makes a one-sentence chunk's pair random, which raises the
    # random share above 50% where documents are short
    docs = documents_of([[12] * 40 for _ in range(30)])
    sequences = nsp_sequences(docs, 64, 0.1, random.Random(1), CLS, SEP)
    assert len(sequences) > 300
    labels = [s.next_sentence_label for s in sequences]
    assert 0.42 < np.mean(labels) < 0.6
    for s in sequences:
        assert len(s.input_ids) <= 64
        first_sep = s.input_ids.index(SEP)
        assert s.input_ids[0] == CLS and s.input_ids[-1] == SEP
        a, b = s.input_ids[1:first_sep], s.input_ids[first_sep + 1 : -1]
        assert a and b
        assert s.token_type_ids == [0] * (len(a) + 2) + [1] * (len(b) + 1)
        assert s.word_ids[0] == s.word_ids[first_sep] == s.word_ids[-1] == SPECIAL_WORD
        doc_a, doc_b = {t // 100000 for t in a}, {t // 100000 for t in b}
        assert len(doc_a) == 1 and len(doc_b) == 1
        if s.next_sentence_label == 0:  # B continues A in the same document (truncation aside)
            assert doc_a == doc_b and a[-1] < b[0]
        else:
            assert doc_a != doc_b


def test_nsp_short_sequences_and_truncation():
    docs = documents_of([[30] * 10 for _ in range(20)])
    long = nsp_sequences(docs, 128, 0.0, random.Random(0), CLS, SEP)
    short = nsp_sequences(docs, 128, 1.0, random.Random(0), CLS, SEP)
    assert np.mean([len(s.input_ids) for s in short]) < np.mean([len(s.input_ids) for s in long])
    assert all(len(s.input_ids) <= 128 for s in long + short)


def test_packing_keeps_all_text_in_order_across_documents():
    docs = documents_of([[5, 3], [4], [2, 2], [40], [3]])
    sequences = packed_sequences(docs, 16, CLS, SEP)
    assert all(len(s.input_ids) <= 16 and s.input_ids[0] == CLS and s.input_ids[-1] == SEP for s in sequences)
    content = [t for s in sequences for t in s.input_ids[1:-1] if t != SEP]
    assert content == [t for doc in docs for sentence in doc for t, _ in sentence]
    # a document that ends inside a sequence is followed by a [SEP] there
    assert any(SEP in s.input_ids[1:-1] for s in sequences)
    assert all(w == SPECIAL_WORD for s in sequences for t, w in zip(s.input_ids, s.word_ids) if t == SEP)


def test_sentence_splitting():
    assert split_sentences("One here. Two there! Three? yes") == ["One here.", "Two there!", "Three?", "yes"]
    assert split_sentences("今天很好。明天下雨！") == ["今天很好。", "明天下雨！"]
