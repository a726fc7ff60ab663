"""NER features: words -> sub-token windows and their labels; pure Python, no Lightning.

Every word is labelled (on its first sub-token) by exactly one window: long sentences are cut into
overlapping windows, and each word is predicted from the window where it has the most context.
With document context, a sentence that fits shares its spare room with its neighbours.
``TaggingFeaturizer`` holds the settings and runs it all over batches of document rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from ..data.conll import OUTSIDE, Sentence, check_label_set, normalize_scheme, split_tag
from ..feature_cache import INPUT_LENGTHS

IGNORE_INDEX = -100  # label of a position the loss skips (special tokens, later sub-tokens, context)


@dataclass
class Window:
    """One model input: sub-tokens (without [CLS]/[SEP]) and the words it is responsible for."""

    sentence: int  # index of the sentence whose words this window labels
    token_ids: list[int]
    word_starts: list[int]  # position in token_ids of the first sub-token of each labelled word
    word_ends: list[int]  # position after its last sub-token (for label_all_tokens)
    word_indices: list[int]  # index in the sentence of each labelled word


def sentence_spans(lengths: Sequence[int], budget: int) -> list[tuple[int, int, list[int]]]:
    """Cut a sentence into overlapping word ranges of at most ``budget`` sub-tokens.

    ``lengths`` holds the number of sub-tokens of each word (0 for a word that tokenizes to
    nothing; each at most ``budget``). Returns ``(start, end, labelled)`` per range: the word
    range ``[start, end)`` and the words that range predicts. Consecutive ranges overlap by about
    half a budget, and each word with sub-tokens is predicted by exactly one range: the one
    where it has the most context, min(sub-tokens on its left, on its right), as BERT's SQuAD
    code chooses among document spans.
    """
    count = len(lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
    if offsets[-1] <= budget:
        return [(0, count, [word for word in range(count) if lengths[word] > 0])]
    stride = max(budget // 2, 1)
    ranges: list[tuple[int, int]] = []
    start = 0
    while True:
        end = start
        while end < count and offsets[end + 1] - offsets[start] <= budget:
            end += 1
        ranges.append((start, end))
        if end >= count:
            break
        # The next range starts about ``stride`` sub-tokens later, never past this range's end
        # (so no word falls between two ranges), and always moves forward.
        next_start = int(np.searchsorted(offsets, offsets[start] + stride, side="left"))
        start = min(max(next_start, start + 1), end)

    best_range = [-1] * count
    best_context = [-1] * count
    for index, (start, end) in enumerate(ranges):
        for word in range(start, end):
            context = min(offsets[word] - offsets[start], offsets[end] - offsets[word + 1])
            if context > best_context[word]:  # ties go to the earlier range
                best_range[word], best_context[word] = index, context
    labelled: list[list[int]] = [[] for _ in ranges]
    for word in range(count):
        if lengths[word] > 0:
            labelled[best_range[word]].append(word)
    return [(start, end, words) for (start, end), words in zip(ranges, labelled, strict=True)]


def build_windows(
    pieces: Sequence[Sequence[Sequence[int]]],
    documents: Sequence[Sequence[int]],
    budget: int,
    document_context: bool = False,
) -> list[Window]:
    """Windows for every sentence, in sentence order.

    ``pieces[s][w]`` are the sub-token ids of word ``w`` of sentence ``s``; ``documents`` groups
    sentence indices by document. With ``document_context``, a sentence that fits leaves its
    spare room to the neighbouring sentences of its document (whole words, split evenly between
    the left and the right); they give context only, and are neither labelled nor scored.
    """
    place: dict[int, tuple[Sequence[int], int]] = {}  # sentence -> (its document, its position there)
    for members in documents:
        for position, sentence in enumerate(members):
            place[sentence] = (members, position)
    windows: list[Window] = []
    for sentence, words in enumerate(pieces):
        lengths = [len(word) for word in words]
        for start, end, labelled in sentence_spans(lengths, budget):
            token_ids: list[int] = []
            position_of: dict[int, tuple[int, int]] = {}
            for word in range(start, end):
                position_of[word] = (len(token_ids), len(token_ids) + lengths[word])
                token_ids.extend(words[word])
            if document_context and start == 0 and end == len(words):
                members, position = place.get(sentence, ([sentence], 0))
                left, right = _context(pieces, members, position, budget - len(token_ids))
                position_of = {word: (a + len(left), b + len(left)) for word, (a, b) in position_of.items()}
                token_ids = left + token_ids + right
            windows.append(
                Window(
                    sentence=sentence,
                    token_ids=token_ids,
                    word_starts=[position_of[word][0] for word in labelled],
                    word_ends=[position_of[word][1] for word in labelled],
                    word_indices=list(labelled),
                )
            )
    return windows


def _context(
    pieces: Sequence[Sequence[Sequence[int]]], members: Sequence[int], position: int, room: int
) -> tuple[list[int], list[int]]:
    """Sub-tokens of the words just before and after sentence ``members[position]`` of a
    document, filling ``room``."""
    before = _nearest_words((pieces[s] for s in reversed(members[:position])), room, backwards=True)
    after = _nearest_words((pieces[s] for s in members[position + 1 :]), room, backwards=False)
    left_words: list[Sequence[int]] = []
    right_words: list[Sequence[int]] = []
    # Take from the left up to half the room, the right gets the rest, and whatever the right
    # could not use goes back to the left (a sentence at the end of a document looks back).
    used_left = _take(before, room // 2, left_words)
    used_right = _take(after, room - used_left, right_words)
    _take(before[len(left_words) :], room - used_left - used_right, left_words)
    left = [token for word in reversed(left_words) for token in word]
    right = [token for word in right_words for token in word]
    return left, right


def _nearest_words(sentences, room: int, backwards: bool) -> list[Sequence[int]]:
    """Words in order of distance from the centre, only as many as could ever fit in ``room``
    (a document can hold thousands of sentences)."""
    words: list[Sequence[int]] = []
    total = 0
    for sentence in sentences:
        for word in reversed(sentence) if backwards else sentence:
            words.append(word)
            total += len(word)
            if total > room:
                return words
    return words


def _take(words, room: int, taken: list) -> int:
    """Append whole words to ``taken`` while they fit in ``room``; returns the sub-tokens used."""
    used = 0
    for word in words:
        if used + len(word) > room:
            break
        taken.append(word)
        used += len(word)
    return used


FEATURE_COLUMNS = (
    "input_ids",
    "attention_mask",
    "labels",
    "sentence",
    "word_positions",
    "word_indices",
    "num_predictable",
)


def documents_as_rows(
    sentences: Sequence[Sentence],
    gold: Sequence[Sequence[str]] | None,
    label_ids: dict[str, int],
    by_line: bool,
) -> list[dict[str, list]]:
    """One row per document (what ``Dataset.map`` sees): its sentences' ids, words and label ids.

    With ``by_line`` (raw text) every line is a document of its own; sentences without words have
    no window at all."""
    rows: dict[int, dict[str, list]] = {}
    for index, sentence in enumerate(sentences):
        if not sentence.words:
            continue
        key = index if by_line else sentence.document
        row = rows.setdefault(key, {"sentence_ids": [], "words": [], "labels": []})
        row["sentence_ids"].append(index)
        row["words"].append(sentence.words)
        tags = gold[index] if gold is not None else None
        row["labels"].append([label_ids[tag] for tag in tags] if tags is not None else [])
    return list(rows.values())


def document_features(
    tokenizer,
    sentence_ids: list[int],
    words: list[list[str]],
    labels: list[list[int]],
    budget: int,
    document_context: bool,
    label_all_tokens: bool,
    label_names: list[str],
) -> tuple[list[dict[str, Any]], list[int]]:
    """The model inputs of one document's windows (``labels`` empty lists when untagged), and the
    whole length in tokens of each of its sentences ([CLS] and [SEP] included)."""
    pieces, lengths = word_pieces(tokenizer, words, budget)
    features = []
    for window in build_windows(pieces, [list(range(len(words)))], budget, document_context):
        length = len(window.token_ids) + 2
        features.append(
            {
                "input_ids": [tokenizer.cls_token_id, *window.token_ids, tokenizer.sep_token_id],
                "attention_mask": [1] * length,
                "labels": window_labels(
                    window, labels[window.sentence], length, label_all_tokens, label_names
                ),
                "sentence": sentence_ids[window.sentence],
                "word_positions": [start + 1 for start in window.word_starts],  # + 1: after [CLS]
                "word_indices": window.word_indices,
                "num_predictable": sum(1 for word in pieces[window.sentence] if word),
            }
        )
    return features, [length + 2 for length in lengths]


def word_pieces(
    tokenizer, sentences: list[list[str]], budget: int
) -> tuple[list[list[list[int]]], list[int]]:
    """Sub-token ids of each word of each sentence; [] for a word that tokenizes to nothing
    (a control character, a zero-width space), so it cannot shift the words after it. Also the
    number of sub-tokens of each sentence, counting those of a giant word beyond ``budget``."""
    encoded = tokenizer(sentences, is_split_into_words=True, add_special_tokens=False, verbose=False)
    pieces: list[list[list[int]]] = []
    for index, words in enumerate(sentences):
        per_word: list[list[int]] = [[] for _ in words]
        for token_id, word in zip(encoded["input_ids"][index], encoded.word_ids(index), strict=True):
            if word is not None and len(per_word[word]) < budget:  # a giant "word" keeps its first pieces
                per_word[word].append(token_id)
        pieces.append(per_word)
    return pieces, [len(ids) for ids in encoded["input_ids"]]


def window_labels(
    window: Window, labels: list[int], length: int, label_all_tokens: bool, label_names: list[str]
) -> list[int]:
    """Token labels of a window ([CLS] at 0): the labelled words' first sub-tokens, and with
    ``label_all_tokens`` their later sub-tokens too (as ``I-`` of the word's type, or ``O``)."""
    token_labels = [IGNORE_INDEX] * length
    if not labels:
        return token_labels
    label_ids = {name: index for index, name in enumerate(label_names)}
    for start, end, word in zip(window.word_starts, window.word_ends, window.word_indices, strict=True):
        token_labels[start + 1] = labels[word]
        if label_all_tokens and end - start > 1:
            name = label_names[labels[word]]
            inside = (
                label_ids.get(f"I-{split_tag(name)[1]}", labels[word]) if name != OUTSIDE else labels[word]
            )
            token_labels[start + 2 : end + 1] = [inside] * (end - start - 1)
    return token_labels


@dataclass(frozen=True)
class TaggingFeaturizer:
    """How sentences become windows. Its fields are the feature cache key (the data module adds
    the tokenizer and max_seq_length), so a change to any of them is a cache miss."""

    labels: tuple[str, ...]  # the label set in id order
    scheme: str  # the tag scheme the labels are written in
    document_context: bool = False  # fill windows with the neighbouring sentences of the document
    label_all_tokens: bool = False  # also label a word's later sub-tokens
    tag_column: int = -1  # the column the tags were read from (the gold labels depend on it)
    format: Literal["conll", "text"] = "conll"  # text: every line is a document of its own

    def __post_init__(self) -> None:
        check_label_set(self.labels)
        if normalize_scheme(self.scheme) != self.scheme:
            raise ValueError(
                f"scheme {self.scheme!r}: give the canonical name {normalize_scheme(self.scheme)!r}"
            )
        if self.scheme != "IOBES" and any(split_tag(label)[0] in ("E", "S") for label in self.labels):
            raise ValueError(f"labels with E-/S- tags are IOBES, not {self.scheme}")
        if self.format not in ("conll", "text"):
            raise ValueError(f"format must be conll or text, not {self.format!r}")

    def cache_key(self) -> dict[str, Any]:
        return {**asdict(self), "labels": list(self.labels)}

    def rows(
        self, sentences: Sequence[Sentence], gold: Sequence[Sequence[str]] | None
    ) -> list[dict[str, list]]:
        """The document rows ``batch_function`` reads (``documents_as_rows``)."""
        label_ids = {name: index for index, name in enumerate(self.labels)}
        return documents_as_rows(sentences, gold, label_ids, by_line=self.format == "text")

    def batch_function(self, tokenizer, max_seq_length: int) -> Callable[[dict[str, list]], dict[str, list]]:
        """The batched ``Dataset.map`` function: document rows -> windows (``FEATURE_COLUMNS``)."""
        budget = max_seq_length - 2  # room for [CLS] and [SEP]
        labels = list(self.labels)

        def featurize(batch: dict[str, list]) -> dict[str, list]:
            features: dict[str, list] = {key: [] for key in FEATURE_COLUMNS}
            lengths: list[int] = []  # of each sentence: the input-length report's
            rows = zip(batch["sentence_ids"], batch["words"], batch["labels"], strict=True)
            for sentence_ids, words, word_labels in rows:
                windows, sentence_lengths = document_features(
                    tokenizer,
                    sentence_ids,
                    words,
                    word_labels,
                    budget,
                    self.document_context,
                    self.label_all_tokens,
                    labels,
                )
                lengths += sentence_lengths
                for feature in windows:
                    for key, value in feature.items():
                        features[key].append(value)
            return {**features, INPUT_LENGTHS: lengths}

        return featurize


def lines_as_rows(lines: Iterable[Sequence[str]]) -> Iterator[dict[str, list] | None]:
    """Raw text, the words of each line: one document row per line, None for a line without
    words (the rows of a streamed ``format="text"`` featurisation)."""
    for number, words in enumerate(lines):
        yield {"sentence_ids": [number], "words": [list(words)], "labels": [[]]} if words else None


def windows_per_sentence(features: Any, count: int) -> np.ndarray:
    """How many windows each of ``count`` sentences has (from the features' ``sentence`` column)."""
    sentence_of = np.asarray(features["sentence"] if len(features) else [], dtype=np.int64)
    return np.bincount(sentence_of, minlength=count)
