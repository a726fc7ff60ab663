"""Pre-training inputs: sequences from documents (NSP pairs or packed text) and masked-LM masks.

Pure Python/numpy, no Lightning. A token is an (id, word) pair: ``word`` numbers the word the
token belongs to (whole-word and span masking keep a word's sub-tokens together); special tokens
have word -1 and are never masked. ``PreTrainingFeatures`` holds the settings (checked once) and
drives the steps: tokenised documents -> sequences -> a mask per sequence.

Next-sentence pairs follow Google's ``create_pretraining_data.py``: segments are runs of whole
sentences packed up to a target length (a shorter random one with ``short_seq_prob``), B is the
actual continuation or, half of the time, a run from another document, and the longer side is
truncated at a random end. Without NSP, text is packed contiguously across sentences and
documents (RoBERTa's FULL-SENTENCES, an extra [SEP] where a document ends).
"""

from __future__ import annotations

import random
import warnings
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..io import UserError
from ..options import check_at_least, check_one_of

Token = tuple[int, int]  # (token id, word number)
Sentence = list[Token]
SPECIAL_WORD = -1
MASKING = ("token", "whole_word", "span")


@dataclass
class Sequence:
    """One model input before masking: ``[CLS] A [SEP] (B [SEP])``."""

    input_ids: list[int]
    token_type_ids: list[int]
    word_ids: list[int]  # SPECIAL_WORD at [CLS] / [SEP]
    next_sentence_label: int = -100  # 0: B follows A, 1: B is random (Google's and HF's convention)


def pair_sequence(
    tokens_a: Sentence, tokens_b: Sentence, cls_id: int, sep_id: int, is_random: bool
) -> Sequence:
    ids = [cls_id, *(t for t, _ in tokens_a), sep_id, *(t for t, _ in tokens_b), sep_id]
    words = [SPECIAL_WORD, *(w for _, w in tokens_a), SPECIAL_WORD, *(w for _, w in tokens_b), SPECIAL_WORD]
    types = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
    return Sequence(ids, types, words, int(is_random))


def nsp_sequences(
    documents: list[list[Sentence]],
    max_seq_length: int,
    short_seq_prob: float,
    rng: random.Random,
    cls_id: int,
    sep_id: int,
) -> list[Sequence]:
    """Sentence pairs with next-sentence labels from every document (Google's pairing)."""
    sequences = []
    for index in range(len(documents)):
        sequences += _document_pairs(documents, index, max_seq_length, short_seq_prob, rng, cls_id, sep_id)
    return sequences


def _document_pairs(
    documents: list[list[Sentence]],
    index: int,
    max_seq_length: int,
    short_seq_prob: float,
    rng: random.Random,
    cls_id: int,
    sep_id: int,
) -> list[Sequence]:
    document = documents[index]
    max_num_tokens = max_seq_length - 3  # [CLS], [SEP], [SEP]
    # Mostly full-length inputs; sometimes shorter ones, so that fine-tuning on short inputs does
    # not meet lengths never seen in pre-training.
    target_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_length = rng.randint(2, max_num_tokens)
    sequences, chunk, length, i = [], [], 0, 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or length >= target_length:
            if chunk:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                tokens_a = [t for sentence in chunk[:a_end] for t in sentence]
                is_random = len(chunk) == 1 or rng.random() < 0.5
                if is_random and len(documents) > 1:
                    target_b = max(1, target_length - len(tokens_a))
                    for _ in range(10):  # another document, almost always at once
                        other = rng.randint(0, len(documents) - 1)
                        if other != index:
                            break
                    other_doc = documents[other]
                    start = rng.randint(0, len(other_doc) - 1)
                    tokens_b = []
                    for sentence in other_doc[start:]:
                        tokens_b += sentence
                        if len(tokens_b) >= target_b:
                            break
                    i -= len(chunk) - a_end  # the unused sentences start the next chunk
                else:
                    is_random = False
                    tokens_b = [t for sentence in chunk[a_end:] for t in sentence]
                truncate_pair(tokens_a, tokens_b, max_num_tokens, rng)
                if tokens_a and tokens_b:
                    sequences.append(pair_sequence(tokens_a, tokens_b, cls_id, sep_id, is_random))
            chunk, length = [], 0
        i += 1
    return sequences


def truncate_pair(tokens_a: Sentence, tokens_b: Sentence, max_num_tokens: int, rng: random.Random) -> None:
    """Shorten the longer side, one token at a time from a random end, until the pair fits."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def packed_sequences(
    documents: list[list[Sentence]], max_seq_length: int, cls_id: int, sep_id: int
) -> list[Sequence]:
    """``[CLS] text [SEP]`` filled with whole sentences in order, across documents (a [SEP] marks a
    document's end); a sentence longer than a sequence is cut."""
    budget = max_seq_length - 2
    sequences: list[Sequence] = []
    current: Sentence = []

    def emit() -> None:
        while current and current[-1][1] == SPECIAL_WORD:  # no document separator at the end
            current.pop()
        if current:
            ids = [cls_id, *(t for t, _ in current), sep_id]
            words = [SPECIAL_WORD, *(w for _, w in current), SPECIAL_WORD]
            sequences.append(Sequence(ids, [0] * len(ids), words))
        current.clear()

    for document in documents:
        for sentence in document:
            if current and len(current) + len(sentence) > budget:
                emit()
            while len(sentence) > budget:
                current.extend(sentence[:budget])
                emit()
                sentence = sentence[budget:]
            current.extend(sentence)
        if current and len(current) < budget:
            current.append((sep_id, SPECIAL_WORD))
    emit()
    return sequences


# ---------------------------------------------------------------------------------------------
# Masked LM


@dataclass
class Masked:
    input_ids: list[int]  # with [MASK], random and kept tokens at the chosen positions
    positions: list[int]  # chosen positions, ascending
    labels: list[int]  # the original ids there


def sample_span_length(rng: np.random.Generator, p: float = 0.2, longest: int = 10) -> int:
    """SpanBERT's span length in words: geometric(p) clipped at ``longest`` (mean 3.8 for 0.2, 10)."""
    return int(rng.choice(np.arange(1, longest + 1), p=span_length_probabilities(p, longest)))


def span_length_probabilities(p: float = 0.2, longest: int = 10) -> np.ndarray:
    """P(length = 1 .. longest): p (1 - p)^(l - 1), renormalised over the clipped range."""
    probs = p * (1 - p) ** np.arange(longest)
    return probs / probs.sum()


def mask_sequence(
    input_ids: list[int],
    word_ids: list[int],
    rng: np.random.Generator,
    mask_id: int,
    vocab_size: int,
    probability: float = 0.15,
    max_predictions: int = 20,
    masking: str = "token",
) -> Masked:
    """Choose ``probability`` of the real tokens (at most ``max_predictions``) and corrupt them:
    80% become [MASK], 10% a random token, 10% stay. ``whole_word`` chooses whole words and
    ``span`` contiguous runs of words (SpanBERT; the 80/10/10 choice is then made per span)."""
    words = _words(word_ids)  # [[positions of a word], ...] in order
    real = sum(len(w) for w in words)
    if real == 0:
        return Masked(list(input_ids), [], [])
    budget = min(max_predictions, max(1, int(round(real * probability))))
    if masking == "span":
        units = _spans(words, budget, rng)
    else:
        if masking == "token":
            words = [[position] for word in words for position in word]
        units = []
        count = 0
        for k in rng.permutation(len(words)):
            if count >= budget:
                break
            if count + len(words[k]) > budget:  # Google's rule: a word that does not fit is skipped
                continue
            units.append(words[k])
            count += len(words[k])
    ids = list(input_ids)
    positions: list[int] = []
    for unit in units:
        decisions = [rng.random()] * len(unit) if masking == "span" else rng.random(len(unit))
        for position, decision in zip(unit, decisions):
            positions.append(position)
            if decision < 0.8:
                ids[position] = mask_id
            elif decision >= 0.9:
                ids[position] = int(rng.integers(vocab_size))
    positions.sort()
    return Masked(ids, positions, [input_ids[p] for p in positions])


def _words(word_ids: list[int]) -> list[list[int]]:
    """Positions grouped into words: consecutive tokens with the same (non-special) word number."""
    words: list[list[int]] = []
    previous = None
    for position, word in enumerate(word_ids):
        if word < 0:
            previous = None
            continue
        if word == previous:
            words[-1].append(position)
        else:
            words.append([position])
        previous = word
    return words


def _spans(words: list[list[int]], budget: int, rng: np.random.Generator) -> list[list[int]]:
    """Non-overlapping runs of whole words until the budget is reached (SpanBERT's scheme): a
    length from ``sample_span_length``, a start word drawn uniformly; a span that would pass the
    budget is cut to the words that fit (its first word always fits: lengths are words), one that
    would overlap an earlier span is drawn again."""
    taken = np.zeros(len(words), dtype=bool)
    spans, count = [], 0
    for _ in range(10 * budget):
        if count >= budget:
            break
        length = sample_span_length(rng)
        start = int(rng.integers(len(words)))
        end = min(start + length, len(words))
        if taken[start:end].any():
            continue
        positions: list[int] = []
        for k in range(start, end):
            if count + len(positions) + len(words[k]) > budget:
                end = k
                break
            positions += words[k]
        if not positions:
            continue
        taken[start:end] = True
        spans.append(positions)
        count += len(positions)
    return spans


# ---------------------------------------------------------------------------------------------
# The settings, checked once, and the steps they drive


@dataclass(frozen=True)
class PreTrainingFeatures:
    """How text becomes pre-training inputs (the ``--data`` options of pre-training): sequences
    built once per split, masks drawn per batch. Checked as it is made."""

    max_seq_length: int = 128  # as asked for (the data module caps it at the encoder's positions)
    masking: str = "token"
    mlm_probability: float = 0.15
    max_predictions_per_seq: int = 20
    chinese_segmenter: str | None = None
    short_seq_prob: float = 0.1
    nsp: bool = False
    validation_seed: int = 12345

    def __post_init__(self) -> None:
        if not 0.0 < self.mlm_probability < 1.0:
            raise UserError(f"--data.mlm_probability must be in (0, 1), not {self.mlm_probability}")
        check_at_least("max_predictions_per_seq", self.max_predictions_per_seq, 1)
        check_one_of("--data.masking", self.masking, MASKING)
        if self.chinese_segmenter not in (None, "jieba"):
            raise UserError(
                f"--data.chinese_segmenter must be jieba (or unset), not {self.chinese_segmenter!r}"
            )
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise UserError(f"--data.short_seq_prob must be in [0, 1], not {self.short_seq_prob}")
        if self.nsp:
            check_at_least(
                "max_seq_length", self.max_seq_length, 5, "[CLS], two [SEP] and a token of each side"
            )
        if self.max_predictions_per_seq < round(self.max_seq_length * self.mlm_probability):
            warnings.warn(
                f"--data.max_predictions_per_seq {self.max_predictions_per_seq} caps the masks below "
                f"{self.mlm_probability:.0%} of {self.max_seq_length}-token sequences (Google used 20 for "
                "128, 76-80 for 512)",
                stacklevel=4,  # the code that made the data module
            )
        object.__setattr__(self, "_segment", segmenter(self.chinese_segmenter))

    def tokenize(self, tokenizer, documents: list[list[str]]) -> list[list[Sentence]]:
        """Every document (a list of sentence texts) as a list of sentences of (token id, word
        number) pairs; sentences without tokens and documents without sentences are dropped."""
        flat = [sentence for document in documents for sentence in document]
        tokenized: list[Sentence] = []
        next_word = 0
        for start in range(0, len(flat), 2000):
            texts = flat[start : start + 2000]
            # split_special_tokens: a literal "[MASK]" or "[SEP]" in the text is text (Google's
            # tokenizer splits it too), never a special token that could be chosen or separate.
            encoding = tokenizer(
                texts,
                add_special_tokens=False,
                return_offsets_mapping=self._segment is not None,
                split_special_tokens=True,
            )
            for i, text in enumerate(texts):
                ids = encoding["input_ids"][i]
                if self._segment is not None:
                    words = segment_words(self._segment(text), encoding["offset_mapping"][i])
                else:
                    words = [w if w is not None else 0 for w in encoding.word_ids(i)]
                tokenized.append([(t, next_word + w) for t, w in zip(ids, words)])
                next_word += (max(words) + 1) if words else 0
        result, k = [], 0
        for document in documents:
            sentences = [s for s in tokenized[k : k + len(document)] if s]
            k += len(document)
            if sentences:
                result.append(sentences)
        return result

    def sequences(
        self,
        documents: list[list[Sentence]],
        max_seq_length: int,
        rng: random.Random,
        cls_id: int,
        sep_id: int,
    ) -> list[Sequence]:
        """NSP pairs (drawn with ``rng``) or packed text, of at most ``max_seq_length`` tokens."""
        if self.nsp:
            return nsp_sequences(documents, max_seq_length, self.short_seq_prob, rng, cls_id, sep_id)
        return packed_sequences(documents, max_seq_length, cls_id, sep_id)

    def columns(self, sequences: list[Sequence]) -> dict[str, list]:
        """The loader's columns: one row per sequence, numbered (as example and as feature)."""
        columns: dict[str, list] = {
            "input_ids": [s.input_ids for s in sequences],
            "token_type_ids": [s.token_type_ids for s in sequences],
            "attention_mask": [[1] * len(s.input_ids) for s in sequences],
            "word_ids": [s.word_ids for s in sequences],
            "example": list(range(len(sequences))),
            "feature_index": list(range(len(sequences))),
        }
        if self.nsp:
            columns["next_sentence_label"] = [s.next_sentence_label for s in sequences]
        return columns

    def mask(
        self,
        input_ids: list[int],
        word_ids: list[int],
        rng: np.random.Generator,
        mask_id: int,
        vocab_size: int,
    ) -> Masked:
        """``mask_sequence`` with these settings."""
        return mask_sequence(
            input_ids,
            word_ids,
            rng,
            mask_id=mask_id,
            vocab_size=vocab_size,
            probability=self.mlm_probability,
            max_predictions=self.max_predictions_per_seq,
            masking=self.masking,
        )


def segmenter(name: str | None) -> Callable[[str], list[str]] | None:
    """The Chinese word segmenter ``name`` (None: the tokenizer's words)."""
    if name is None:
        return None
    try:
        import jieba
    except ImportError:
        raise UserError(
            "--data.chinese_segmenter jieba needs the jieba package: pip install 'bert-tasks[chinese]'"
        ) from None
    jieba.setLogLevel(60)  # no "Building prefix dict" chatter on stderr
    return jieba.lcut


def segment_words(words: list[str], offsets: list[tuple[int, int]]) -> list[int]:
    """Each token's word number: the segmenter's word its first character falls in."""
    ends, position = [], 0
    for word in words:
        position += len(word)
        ends.append(position)
    return [bisect_right(ends, start) for start, _ in offsets]
