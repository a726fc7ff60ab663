"""NER as token classification: words to windows of sub-tokens, scores back to valid tag sequences.

Data flow: CoNLL sentences (or raw text lines split into words) -> sub-tokens per word ->
windows of at most ``max_seq_length`` tokens, in which each word is labelled (on its first
sub-token) by exactly one window -> encoder + linear head -> per-word label scores gathered
from all windows of a sentence -> constrained Viterbi over the transitions the tag scheme allows
-> one valid tag per word -> entity spans, scored with seqeval or written with character offsets.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tasks.data.conll import (
    DOCSTART,
    OUTSIDE,
    ConllFile,
    Sentence,
    allowed_end,
    allowed_transition,
    convert_tags,
    detect_scheme,
    entity_types,
    is_valid_tag,
    label_names_for,
    normalize_scheme,
    read_conll,
    split_columns,
    split_tag,
    tags_to_spans,
)
from tasks.datamodule import TaskDataModule
from tasks.io import DataError, UserError, atomic_open, read_text_lines, write_jsonl
from tasks.metrics.ner import ner_scores
from tasks.module import TaskModule

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label of a position the loss skips (special tokens, later sub-tokens, context)

# ----------------------------------------------------------------------------------------------
# Windows: every word predicted exactly once


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


# ----------------------------------------------------------------------------------------------
# Constrained decoding


def transition_constraints(
    label_names: Sequence[str], scheme: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean masks of what the scheme allows: ``start[j]``, ``transition[i, j]`` (label i then
    label j) and ``end[i]``."""
    scheme = normalize_scheme(scheme)
    start = np.array([allowed_transition(None, label, scheme) for label in label_names])
    transition = np.array(
        [[allowed_transition(prev, label, scheme) for label in label_names] for prev in label_names]
    )
    end = np.array([allowed_end(label, scheme) for label in label_names])
    return start, transition, end


def viterbi(
    scores: np.ndarray,
    start: np.ndarray,
    transition: np.ndarray,
    end: np.ndarray,
    transition_scores: np.ndarray | None = None,
) -> list[int]:
    """The label sequence with the highest total score among the sequences the masks allow.

    ``scores`` is [words, labels] (log-probabilities: the sum is the sequence's log-probability
    under independent per-word predictions). ``transition_scores`` (a CRF's) are added when given.
    """
    length = scores.shape[0]
    if length == 0:
        return []
    forbidden = np.float64(-1e9)  # a large finite penalty keeps the arithmetic free of inf - inf
    pair = np.where(transition, 0.0, forbidden)
    if transition_scores is not None:
        pair = pair + transition_scores
    best = scores[0] + np.where(start, 0.0, forbidden)
    back = np.zeros((length, scores.shape[1]), dtype=np.int64)
    for step in range(1, length):
        candidates = best[:, None] + pair  # [previous label, label]
        back[step] = candidates.argmax(axis=0)
        best = candidates.max(axis=0) + scores[step]
    best = best + np.where(end, 0.0, forbidden)
    path = [int(best.argmax())]
    for step in range(length - 1, 0, -1):
        path.append(int(back[step, path[-1]]))
    return path[::-1]


def fill_untokenized(tags: list[str | None]) -> list[str]:
    """Tags for the words the model saw nothing of (None): inside an entity whose next word
    continues it, the word joins the entity (``I-X``); anywhere else it is ``O``. Either way
    the sequence stays valid."""
    filled: list[str] = []
    for index, tag in enumerate(tags):
        if tag is None:
            previous = filled[-1] if filled else OUTSIDE
            following = next((t for t in tags[index + 1 :] if t is not None), OUTSIDE)
            previous_prefix, previous_type = split_tag(previous)
            following_prefix, following_type = split_tag(following)
            continues = (
                previous_prefix in ("B", "I")
                and following_prefix in ("I", "E")
                and previous_type == following_type
            )
            tag = f"I-{previous_type}" if continues else OUTSIDE
        filled.append(tag)
    return filled


# ----------------------------------------------------------------------------------------------
# Raw text to words with character offsets


_CLITIC = re.compile(r"(?i)(?<=\w)(['’](?:s|re|ve|ll|d|m)|n['’]t)$")
_INITIALISM = re.compile(r"^(?:\w\.){2,}$")  # U.S., e.g. : the final period belongs to the word


def is_punctuation(char: str) -> bool:
    """BERT's definition: Unicode P* plus the ASCII symbols such as $, +, ^, `."""
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def is_cjk(char: str) -> bool:
    """CJK ideographs, the characters BERT's tokenizer splits one by one (Chinese NER is per character)."""
    code = ord(char)
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0x20000 <= code <= 0x2A6DF
        or 0x2A700 <= code <= 0x2CEAF
        or 0xF900 <= code <= 0xFAFF
        or 0x2F800 <= code <= 0x2FA1F
    )


def split_words(text: str) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of the words of a raw text line, tokenized the way
    CoNLL files are: whitespace separates words, punctuation at the edges of a word stands alone
    ("Paris," -> "Paris" ","), English clitics split off ("Obama's" -> "Obama" "'s"), an
    initialism keeps its period ("U.S."), and each CJK character is a word of its own."""
    spans: list[tuple[int, int]] = []
    for match in re.finditer(r"\S+", text):
        start, end = match.span()
        run_start = start
        for position in range(start, end):  # CJK characters cut the chunk into runs
            if is_cjk(text[position]):
                spans.extend(_split_chunk(text, run_start, position))
                spans.append((position, position + 1))
                run_start = position + 1
        spans.extend(_split_chunk(text, run_start, end))
    return spans


def _split_chunk(text: str, start: int, end: int) -> list[tuple[int, int]]:
    leading: list[tuple[int, int]] = []
    trailing: list[tuple[int, int]] = []
    while start < end and is_punctuation(text[start]):
        leading.append((start, start + 1))
        start += 1
    while end > start and is_punctuation(text[end - 1]):
        if text[end - 1] == "." and _INITIALISM.match(text[start:end]):
            break
        trailing.append((end - 1, end))
        end -= 1
    middle: list[tuple[int, int]] = []
    if start < end:
        clitic = _CLITIC.search(text[start:end])
        if clitic:
            middle = [(start, start + clitic.start()), (start + clitic.start(), end)]
        else:
            middle = [(start, end)]
    return leading + middle + trailing[::-1]


# ----------------------------------------------------------------------------------------------
# Data module


@dataclass
class TaggingSplit:
    """One split as read: sentences, gold tags in the training scheme, and what writing needs."""

    path: str
    format: str  # "conll" or "text"
    sentences: list[Sentence]
    gold: list[list[str]] | None  # None when the file has no tags
    conll: ConllFile | None = None  # conll format: the file, to write it back with predictions
    lines: list[str] | None = None  # text format: the original lines
    spans: list[list[tuple[int, int]]] | None = None  # text format: character span of each word
    features: datasets.Dataset | None = None


class TaggingDataModule(TaskDataModule):
    """CoNLL files for NER (and any word tagging in the B-/I-/E-/S- schemes).

    Args:
        tag_scheme: the scheme the model trains on and predicts in: BIO (IOB2), IOB1 or IOBES.
            Files in any scheme are converted to it (CoNLL-2003's original files are IOB1).
        tag_column: the column holding the tag (0 is the token; negative counts from the end).
        label_all_tokens: also train on the later sub-tokens of a word (with its I- tag); by
            default only the first sub-token of a word carries its label.
        document_context: fill each window with the neighbouring sentences of the same document
            (documents are cut by -DOCSTART- lines); only the centre sentence is labelled and scored.
        unseen_tags: what to do with a dev/test tag whose type is not in the train file: ``error``
            (naming file:line) or ``map_to_o`` (with a warning).
        predict_format: ``conll`` (write the file back with a predicted-tag column), ``text``
            (one raw text per line -> JSONL with character offsets), or ``auto``: text for
            ``.txt`` files, CoNLL otherwise.
        labels: the label set in id order (default: from the train file; filled in from a checkpoint).
    """

    def __init__(
        self,
        tag_scheme: str = "BIO",
        tag_column: int = -1,
        label_all_tokens: bool = False,
        document_context: bool = False,
        unseen_tags: Literal["error", "map_to_o"] = "error",
        predict_format: Literal["auto", "conll", "text"] = "auto",
        labels: list[str] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        try:
            self.tag_scheme = normalize_scheme(tag_scheme)
        except ValueError as err:
            raise UserError(str(err)) from None
        if self._max_seq_length < 3:
            raise UserError(
                f"max_seq_length must leave room for a word besides [CLS] and [SEP], not {self._max_seq_length}"
            )
        self.tag_column = tag_column
        self.label_all_tokens = label_all_tokens
        self.document_context = document_context
        self.unseen_tags = unseen_tags
        self.predict_format = predict_format
        self.labels = list(labels) if labels is not None else None
        if self.labels is not None:
            self.tag_scheme = self._scheme_of_labels(self.labels)
        self._label_names: list[str] | None = None
        self.splits: dict[str, TaggingSplit] = {}

    # -- link sources ------------------------------------------------------------------------------

    @property
    def task(self) -> str:
        return "ner"

    @property
    def label_names(self) -> list[str] | None:
        """ "O" and each entity type's tags in the training scheme, from the train file."""
        if self._label_names is None:
            if self.labels is not None:
                self._label_names = list(self.labels)
            elif self.train_file is not None or self.hub_split("train") is not None:
                train = self.read("train")
                types = {split_tag(tag)[1] for tags in train.gold for tag in tags if tag != OUTSIDE}
                self._label_names = label_names_for(types, self.tag_scheme)
        return self._label_names

    def _scheme_of_labels(self, labels: list[str]) -> str:
        """A given label set decides between IOBES and the others (a checkpoint's labels)."""
        bad = [label for label in labels if not is_valid_tag(label)]
        if bad or OUTSIDE not in labels:
            raise UserError(f"labels must be O and B-/I-/E-/S- tags, got {labels}")
        uses_iobes = any(split_tag(label)[0] in ("E", "S") for label in labels)
        if uses_iobes:
            return "IOBES"
        return "BIO" if self.tag_scheme == "IOBES" else self.tag_scheme

    # -- reading -----------------------------------------------------------------------------------

    def read(self, split: str) -> TaggingSplit:
        if split not in self.splits:
            self.splits[split] = self._read(split)
        return self.splits[split]

    def _read(self, split: str) -> TaggingSplit:
        path = self.split_file(split)
        if path is None:
            rows = self.hub_split(split)
            if rows is None:
                raise UserError(f"no {split} file: set --data.{_FILE_OPTION[split]}")
            return self._read_hub(split, rows)
        if split == "predict" and self._predict_is_text(path):
            lines = read_text_lines(path)
            spans = [split_words(line) for line in lines]
            sentences = [
                Sentence([line[a:b] for a, b in line_spans], None, number - 1, [number] * len(line_spans))
                for number, (line, line_spans) in enumerate(zip(lines, spans, strict=True), start=1)
            ]
            return TaggingSplit(str(path), "text", sentences, None, lines=lines, spans=spans)
        conll = read_conll(path, self.tag_column)
        if split == "predict":
            return TaggingSplit(str(path), "conll", conll.sentences, None, conll=conll)
        if not conll.has_tags:
            first = conll.sentences[0].line
            raise DataError(
                path, f"no tag column: a {split} file needs a token and a tag per line", line=first
            )
        gold = self._gold_tags(split, conll.path, conll.sentences)
        return TaggingSplit(str(path), "conll", conll.sentences, gold, conll=conll)

    def _read_hub(self, split: str, rows) -> TaggingSplit:
        """A Hub data set with ``tokens`` and ``ner_tags`` columns (conll2003, wnut_17, ...)."""
        names = rows.features["ner_tags"].feature.names
        sentences = [
            Sentence(
                list(row["tokens"]), [names[t] for t in row["ner_tags"]], 0, [index + 1] * len(row["tokens"])
            )
            for index, row in enumerate(rows)
            if row["tokens"]
        ]
        origin = f"{self.dataset}[{split}]"
        gold = self._gold_tags(split, origin, sentences) if split != "predict" else None
        return TaggingSplit(origin, "conll", sentences, gold)

    def _predict_is_text(self, path: str) -> bool:
        if self.predict_format != "auto":
            return self.predict_format == "text"
        return Path(path).suffix.lower() in (".txt", ".text")

    def _gold_tags(self, split: str, path, sentences: list[Sentence]) -> list[list[str]]:
        """The file's tags converted to the training scheme; an unseen type is an error or O."""
        known = None if split == "train" else set(entity_types(self.label_names or []))
        unseen = 0
        gold = []
        for sentence in sentences:
            tags = list(sentence.tags or [])
            for index, tag in enumerate(tags):
                entity_type = split_tag(tag)[1]
                if known is not None and tag != OUTSIDE and entity_type not in known:
                    if self.unseen_tags == "error":
                        raise DataError(
                            path,
                            f"tag {tag!r}: type {entity_type!r} is not in the train file's label set "
                            f"({', '.join(sorted(known)) or 'none'}); pass --data.unseen_tags map_to_o to read it as O",
                            line=sentence.lines[index],
                        )
                    tags[index] = OUTSIDE
                    unseen += 1
            gold.append(convert_tags(tags, self.tag_scheme))
        if unseen:
            log.warning("%s: %d tag(s) of types unseen in training read as O", path, unseen)
        return gold

    # -- features ----------------------------------------------------------------------------------

    def build(self, split: str) -> TaggingSplit:
        data = self.read(split)
        label_names = self.label_names
        if label_names is None:
            raise UserError(
                "the label set is unknown: give --data.train_file, --data.labels, or a checkpoint (--ckpt_path)"
            )
        label_ids = {name: index for index, name in enumerate(label_names)}
        tokenizer, budget = self.tokenizer, self.max_seq_length - 2
        document_context, label_all_tokens = self.document_context, self.label_all_tokens

        def featurize(batch: dict[str, list]) -> dict[str, list]:
            features: dict[str, list] = {key: [] for key in FEATURE_COLUMNS}
            for sentence_ids, words, labels in zip(
                batch["sentence_ids"], batch["words"], batch["labels"], strict=True
            ):
                for feature in document_features(
                    tokenizer,
                    sentence_ids,
                    words,
                    labels,
                    budget,
                    document_context,
                    label_all_tokens,
                    label_names,
                ):
                    for key, value in feature.items():
                        features[key].append(value)
            return features

        settings = {
            "labels": label_names,
            "scheme": self.tag_scheme,
            "document_context": document_context,
            "label_all_tokens": label_all_tokens,
            "tag_column": self.tag_column,
            "format": data.format,
        }
        rows = _documents_as_rows(data, label_ids)
        data.features = self.featurize(f"{split}-{Path(data.path).name}", rows, featurize, settings)
        return data

    def setup(self, stage: str) -> None:
        splits = {
            "fit": ["train", "validation"],
            "validate": ["validation"],
            "test": ["test"],
            "predict": ["predict"],
        }[stage]
        for split in splits:
            if (
                split == "validation"
                and self.validation_file is None
                and self.hub_split("validation") is None
            ):
                continue
            self.build(split)

    def train_dataloader(self):
        return self.make_loader(self.splits["train"].features, shuffle=True)

    def val_dataloader(self):
        return (
            self.make_loader(self.splits["validation"].features, shuffle=False)
            if "validation" in self.splits
            else []
        )

    def test_dataloader(self):
        return self.make_loader(self.splits["test"].features, shuffle=False)

    def predict_dataloader(self):
        return self.make_loader(self.splits["predict"].features, shuffle=False)

    # -- predictions -------------------------------------------------------------------------------

    def write_predictions(self, outputs: list[list[str]]) -> Path:
        """``outputs``: the predicted tags of every sentence of the predict file, in order."""
        data = self.splits["predict"]
        if data.format == "text":
            return write_jsonl(self.predictions_path(), text_records(data.lines, data.spans, outputs))
        path = (
            self.predictions_path() if self.predictions_file else self.predictions_path("predictions.conll")
        )
        tags = outputs
        if data.conll is not None and data.conll.has_tags:
            # Predictions in the scheme of the file's own gold column, so conlleval reads both alike.
            file_scheme = detect_scheme(s.tags for s in data.sentences)
            tags = [convert_tags(sentence_tags, file_scheme) for sentence_tags in outputs]
        with atomic_open(path) as handle:
            for line in conll_lines_with_predictions(read_text_lines(data.path), data.conll, tags):
                handle.write(line + "\n")
        return path


_FILE_OPTION = {
    "train": "train_file",
    "validation": "validation_file",
    "test": "test_file",
    "predict": "predict_file",
}
FEATURE_COLUMNS = (
    "input_ids",
    "attention_mask",
    "labels",
    "sentence",
    "word_positions",
    "word_indices",
    "num_predictable",
)


def _documents_as_rows(data: TaggingSplit, label_ids: dict[str, int]) -> list[dict[str, list]]:
    """One row per document (what ``Dataset.map`` sees): its sentences' ids, words and label ids.

    Text lines are documents of their own; sentences without words have no window at all."""
    rows: dict[int, dict[str, list]] = {}
    for index, sentence in enumerate(data.sentences):
        if not sentence.words:
            continue
        key = sentence.document if data.format == "conll" else index
        row = rows.setdefault(key, {"sentence_ids": [], "words": [], "labels": []})
        row["sentence_ids"].append(index)
        row["words"].append(sentence.words)
        gold = data.gold[index] if data.gold is not None else None
        row["labels"].append([label_ids[tag] for tag in gold] if gold is not None else [])
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
) -> Iterator[dict[str, Any]]:
    """The model inputs of one document's windows (``labels`` empty lists when untagged)."""
    pieces = word_pieces(tokenizer, words, budget)
    for window in build_windows(pieces, [list(range(len(words)))], budget, document_context):
        length = len(window.token_ids) + 2
        yield {
            "input_ids": [tokenizer.cls_token_id, *window.token_ids, tokenizer.sep_token_id],
            "attention_mask": [1] * length,
            "labels": window_labels(window, labels[window.sentence], length, label_all_tokens, label_names),
            "sentence": sentence_ids[window.sentence],
            "word_positions": [start + 1 for start in window.word_starts],  # + 1: after [CLS]
            "word_indices": window.word_indices,
            "num_predictable": sum(1 for word in pieces[window.sentence] if word),
        }


def word_pieces(tokenizer, sentences: list[list[str]], budget: int) -> list[list[list[int]]]:
    """Sub-token ids of each word of each sentence; [] for a word that tokenizes to nothing
    (a control character, a zero-width space), so it cannot shift the words after it."""
    encoded = tokenizer(sentences, is_split_into_words=True, add_special_tokens=False, verbose=False)
    pieces: list[list[list[int]]] = []
    for index, words in enumerate(sentences):
        per_word: list[list[int]] = [[] for _ in words]
        for token_id, word in zip(encoded["input_ids"][index], encoded.word_ids(index), strict=True):
            if word is not None and len(per_word[word]) < budget:  # a giant "word" keeps its first pieces
                per_word[word].append(token_id)
        pieces.append(per_word)
    return pieces


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


def text_records(
    lines: list[str], spans: list[list[tuple[int, int]]], tags: list[list[str]]
) -> list[dict[str, Any]]:
    """JSONL records for raw text: the line and its entities with character offsets into it."""
    records = []
    for line, word_spans, line_tags in zip(lines, spans, tags, strict=True):
        entities = []
        for entity_type, first, last in tags_to_spans(line_tags):
            start, end = word_spans[first][0], word_spans[last - 1][1]
            entities.append({"text": line[start:end], "type": entity_type, "start": start, "end": end})
        records.append({"text": line, "entities": entities})
    return records


def conll_lines_with_predictions(lines: list[str], conll: ConllFile, tags: list[list[str]]) -> Iterator[str]:
    """The CoNLL file again, each token line with the predicted tag as a new last column.

    This is conlleval's layout when the gold tag is the last column; a gold column elsewhere
    moves to the second-to-last place. -DOCSTART- lines get an O, separators stay empty lines."""
    predicted = iter(tag for sentence_tags in tags for tag in sentence_tags)
    separator = conll.separator
    gold_column = conll.tag_column
    for line in lines:
        if not line.strip():
            yield ""
            continue
        columns = split_columns(line)
        if gold_column is not None and gold_column != len(columns) - 1 and len(columns) == conll.num_columns:
            columns.append(columns.pop(gold_column))
        tag = OUTSIDE if columns[0] == DOCSTART else next(predicted)
        yield separator.join([*columns, tag])


# ----------------------------------------------------------------------------------------------
# Module


class TaggingModule(TaskModule):
    """Token classification: encoder -> dropout -> linear over the tags, read at each word's first
    sub-token; decoding is a Viterbi search over the transitions the tag scheme allows.

    Args:
        classifier_dropout: dropout before the linear head (default: the encoder's hidden dropout).
        strict_metrics: score with seqeval's strict mode for the scheme instead of conlleval's rules
            (equal for decoded predictions, which are always valid; differs on sloppy gold files).
    """

    main_metric = "val/f1"
    main_metric_mode = "max"

    def __init__(self, classifier_dropout: float | None = None, strict_metrics: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        if not self.label_names:
            raise UserError(
                "a tagging model needs its label names (they come from the train file or the checkpoint)"
            )
        dropout = (
            self.encoder.config.hidden_dropout_prob if classifier_dropout is None else classifier_dropout
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.hidden_size, len(self.label_names))
        self.classifier.weight.data.normal_(0.0, self.encoder.config.initializer_range)
        self.classifier.bias.data.zero_()
        self.strict_metrics = strict_metrics
        self._tag_scheme: str | None = None
        self._collected: list[WordScores] = []

    # -- the scheme the labels are written in ------------------------------------------------------

    @property
    def tag_scheme(self) -> str:
        if self._tag_scheme is None:
            datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
            self._tag_scheme = getattr(datamodule, "tag_scheme", None) or (
                "IOBES" if any(label[:2] in ("E-", "S-") for label in self.label_names) else "BIO"
            )
        return self._tag_scheme

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[CHECKPOINT_KEY] = {"tag_scheme": self.tag_scheme}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stored = checkpoint.get(CHECKPOINT_KEY, {}).get("tag_scheme")
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        wanted = getattr(datamodule, "tag_scheme", None)
        if stored and wanted and stored != wanted:
            raise UserError(
                f"the checkpoint was trained with --data.tag_scheme {stored}, not {wanted}: pass the same scheme"
            )
        self._tag_scheme = stored or self._tag_scheme

    # -- steps -------------------------------------------------------------------------------------

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.encode(batch).last_hidden_state  # [B, T, H]
        return self.classifier(self.dropout(hidden))  # [B, T, labels]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self(batch)
        loss = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE_INDEX)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss

    def _collect(self, batch: dict[str, Any], logits: torch.Tensor) -> None:
        """Keep each labelled word's log-probabilities, to decode whole sentences later."""
        log_probs = logits.float().log_softmax(-1).cpu().numpy()
        positions = batch["word_positions"].cpu().numpy()
        indices = batch["word_indices"].cpu().numpy()
        for row in range(log_probs.shape[0]):
            keep = positions[row] != IGNORE_INDEX  # the collate pads these lists with -100
            self._collected.append(
                WordScores(
                    sentence=int(batch["sentence"][row]),
                    word_indices=indices[row][keep],
                    scores=log_probs[row, positions[row][keep]],
                    num_predictable=int(batch["num_predictable"][row]),
                )
            )

    def _eval_step(self, batch: dict[str, Any], prefix: str) -> None:
        logits = self(batch)
        loss = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE_INDEX)
        self.log(f"{prefix}/loss", loss, batch_size=len(batch["input_ids"]))
        self._collect(batch, logits)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self._collected = []

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_epoch_end(self) -> None:
        self._score("val", "validation")

    def on_test_epoch_end(self) -> None:
        self._score("test", "test")

    def _score(self, prefix: str, split: str) -> None:
        data = self.trainer.datamodule.splits[split]
        decoded = self.decode(self._collected, [len(s.words) for s in data.sentences])
        self._collected = []
        # Sentences whose windows were not all seen (a sanity check, --trainer.limit_val_batches)
        # cannot be scored; a full pass scores every sentence of the file.
        complete = [index for index, tags in enumerate(decoded) if tags is not None]
        if not complete:
            return
        scores = ner_scores(
            [data.gold[i] for i in complete],
            [decoded[i] for i in complete],
            self.tag_scheme,
            self.strict_metrics,
        )
        for name, value in scores.items():
            self.log(f"{prefix}/{name}", value)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[int]:
        self._collect(batch, self(batch))
        return batch["sentence"].tolist()  # the sentences this batch touched; decoding waits for all

    def on_predict_epoch_start(self) -> None:
        super().on_predict_epoch_start()
        self._collected = []

    def on_predict_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        pass  # words are collected in predict_step and decoded per sentence at the end

    def on_predict_epoch_end(self) -> None:
        data = self.trainer.datamodule.splits["predict"]
        decoded = self.decode(self._collected, [len(s.words) for s in data.sentences])
        self._collected = []
        missing = sum(tags is None for tags in decoded)
        if missing:
            raise UserError(
                f"{missing} sentence(s) of {data.path} were not predicted (--trainer.limit_predict_batches?)"
            )
        self._predictions = decoded
        super().on_predict_epoch_end()

    # -- decoding ----------------------------------------------------------------------------------

    def decode(self, collected: list[WordScores], sentence_lengths: list[int]) -> list[list[str] | None]:
        """The best valid tag sequence of every sentence; None for a sentence not fully seen."""
        start, transition, end = transition_constraints(self.label_names, self.tag_scheme)
        by_sentence: dict[int, dict[int, np.ndarray]] = {}
        expected: dict[int, int] = {}
        for item in collected:
            words = by_sentence.setdefault(item.sentence, {})
            for word, scores in zip(item.word_indices, item.scores, strict=True):
                words[int(word)] = scores
            expected[item.sentence] = item.num_predictable
        decoded: list[list[str] | None] = []
        for sentence, length in enumerate(sentence_lengths):
            words = by_sentence.get(sentence, {})
            if length and len(words) != expected.get(sentence, -1):
                decoded.append(None)
                continue
            order = sorted(words)
            path = viterbi(np.stack([words[w] for w in order]), start, transition, end) if order else []
            tags: list[str | None] = [None] * length
            for word, label in zip(order, path, strict=True):
                tags[word] = self.label_names[label]
            decoded.append(fill_untokenized(tags))
        return decoded


CHECKPOINT_KEY = "tagging"


@dataclass
class WordScores:
    """The label log-probabilities of the words one window labels."""

    sentence: int
    word_indices: np.ndarray
    scores: np.ndarray  # [words, labels]
    num_predictable: int  # words of the sentence that have sub-tokens (all must be seen to decode)
