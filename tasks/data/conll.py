"""CoNLL column files and the tag schemes they use (IOB1, BIO/IOB2, IOBES).

A CoNLL file holds one token per line, its first column the word and one column the tag (the
last by default); a blank or whitespace-only line ends a sentence, and ``-DOCSTART-`` lines cut
the file into documents, wherever they stand. Everything here is plain Python: the reader turns
a file into ``Sentence`` objects, and the scheme helpers turn tags into entity spans and back.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..io import DataError, iter_text_lines, read_text_lines

log = logging.getLogger(__name__)

DOCSTART = "-DOCSTART-"
OUTSIDE = "O"

# The schemes a model can train on. "IOB2" is the other common name of BIO.
SCHEMES = ("BIO", "IOB1", "IOBES")
SCHEME_ALIASES = {"IOB2": "BIO", "BIOES": "IOBES"}

# A tag is O or PREFIX-TYPE; the type may itself hold dashes (WNUT-17's B-creative-work).
_TAG_PATTERN = re.compile(r"^(?:O|[BIES]-\S+)$")


def normalize_scheme(name: str) -> str:
    """The canonical name of a tag scheme ("iob2" -> "BIO"); ValueError for an unknown one."""
    upper = name.upper()
    upper = SCHEME_ALIASES.get(upper, upper)
    if upper not in SCHEMES:
        raise ValueError(f"unknown tag scheme {name!r}: expected one of BIO (IOB2), IOB1, IOBES")
    return upper


def is_valid_tag(tag: str) -> bool:
    """True for "O" and "B-X", "I-X", "E-X", "S-X"; False for "B_PER", "X-LOC", "B-"."""
    return bool(_TAG_PATTERN.match(tag))


def split_tag(tag: str) -> tuple[str, str]:
    """("B", "PER") for "B-PER"; ("O", "") for "O"."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    return tag[0], tag[2:]


def check_label_set(labels: Sequence[str]) -> None:
    """ValueError unless ``labels`` holds O and only valid tags."""
    if OUTSIDE not in labels or not all(is_valid_tag(label) for label in labels):
        raise ValueError(f"labels must be O and B-/I-/E-/S- tags, got {list(labels)}")


def scheme_for_labels(labels: Sequence[str] | None, requested: str) -> str:
    """The scheme a model trains and predicts in: ``requested``, unless a given label set (a
    checkpoint's) decides between IOBES (it holds E-/S- tags) and the others (it does not)."""
    scheme = normalize_scheme(requested)
    if labels is None:
        return scheme
    check_label_set(labels)
    if any(split_tag(label)[0] in ("E", "S") for label in labels):
        return "IOBES"
    return "BIO" if scheme == "IOBES" else scheme


# ----------------------------------------------------------------------------------------------
# Reading


@dataclass
class Sentence:
    """One sentence of a CoNLL file; ``tags`` is None when the file has no tag column."""

    words: list[str]
    tags: list[str] | None
    document: int  # index of the document (run of sentences between -DOCSTART- lines)
    lines: list[int]  # 1-based line number of each word, for error messages

    @property
    def line(self) -> int:
        return self.lines[0]


@dataclass
class ConllFile:
    path: Path
    sentences: list[Sentence]
    num_columns: int
    tag_column: int | None  # index into the columns, None when the file carries no tags
    has_docstart: bool
    separator: str = "\t"  # how the token lines separated their columns (kept when writing)

    @property
    def has_tags(self) -> bool:
        return self.tag_column is not None


@dataclass
class TaggedSplit:
    """A split as a task reads it: the sentences, their tags in the training scheme, the file."""

    path: str
    sentences: list[Sentence]
    gold: list[list[str]] | None  # None when unlabelled (a file to predict on)
    file: ConllFile | None = None  # None for a Hub data set: there is no file to write back

    def prediction_lines(self, model_scheme: str) -> tuple[Callable, Callable | None]:
        """How predictions are written, ``render(sentence, tags)`` and ``footer()`` giving lines:
        the file again with a predicted-tag column (``ConllPredictions``); a Hub data set as
        JSONL ``{words, tags}``."""
        if self.file is None:
            words = [sentence.words for sentence in self.sentences]
            return (lambda s, tags: [json.dumps({"words": words[s], "tags": list(tags)})]), None
        writer = ConllPredictions(read_text_lines(self.path), self.file, model_scheme)
        return writer.sentence, writer.rest


def split_columns(line: str) -> list[str]:
    """Columns of a token line: tab-separated when the line holds a tab, else whitespace-separated.

    Splitting a tab-separated line only on tabs keeps a token that contains spaces whole.
    """
    if "\t" in line:
        return [column.strip() for column in line.rstrip().split("\t")]
    return line.split()


def read_conll(path: str | os.PathLike, tag_column: int = -1) -> ConllFile:
    """Read a CoNLL column file into sentences and documents.

    ``tag_column`` picks the tag column (negative counts from the end; default the last). A file
    of one column is untagged (words only). Wrong column counts, invalid tag strings and a file
    without any sentence raise a DataError naming the file and the line.
    """
    path = Path(path)
    lines = read_text_lines(path)
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    word_lines: list[int] = []
    num_columns: int | None = None
    resolved_tag_column: int | None = None
    document = 0
    has_docstart = False
    separator = "\t"

    def end_sentence() -> None:
        if words:
            sentence_tags = list(tags) if resolved_tag_column is not None else None
            sentences.append(Sentence(list(words), sentence_tags, document, list(word_lines)))
            words.clear()
            tags.clear()
            word_lines.clear()

    for number, line in enumerate(lines, start=1):
        if not line.strip():  # empty, or whitespace only (WNUT-17 separates with a lone TAB)
            end_sentence()
            continue
        columns = split_columns(line)
        if columns[0] == DOCSTART:
            # A document boundary wherever it stands: before a document, or after it.
            end_sentence()
            if sentences and sentences[-1].document == document:
                document += 1
            has_docstart = True
            continue
        if num_columns is None:
            num_columns = len(columns)
            separator = "\t" if "\t" in line else " "
            resolved_tag_column = _resolve_tag_column(path, number, num_columns, tag_column)
        elif len(columns) != num_columns:
            raise DataError(
                path,
                f"expected {num_columns} columns like the first token line, found {len(columns)}",
                line=number,
            )
        if not columns[0]:
            raise DataError(path, "empty token in the first column", line=number)
        words.append(columns[0])
        word_lines.append(number)
        if resolved_tag_column is not None:
            tag = columns[resolved_tag_column]
            if not is_valid_tag(tag):
                raise DataError(
                    path, f"invalid tag {tag!r}: expected O or B-, I-, E-, S- followed by a type", line=number
                )
            tags.append(tag)
    end_sentence()

    if not sentences:
        raise DataError(
            path,
            "no sentences found (the file is empty or holds only blank and -DOCSTART- lines)",
            line=max(len(lines), 1),
        )
    return ConllFile(path, sentences, num_columns or 0, resolved_tag_column, has_docstart, separator)


def looks_like_conll(path: str | os.PathLike, sample: int = 8) -> bool:
    """Whether a file's first non-blank lines (up to ``sample`` of them) are CoNLL columns: a
    ``-DOCSTART-`` line, or lines of one count of two or more columns whose last column is a tag
    (``O``, ``B-X``, ``I-X``, ...). Raw sentences do not look like that (CoNLL-2003 is distributed
    as ``train.txt``/``valid.txt``/``test.txt``). Only the start of the file is read."""
    counts: set[int] = set()
    seen = 0
    for line in iter_text_lines(path):
        if not line.strip():
            continue
        columns = split_columns(line)
        if columns[0] == DOCSTART:
            return True
        if len(columns) < 2 or not is_valid_tag(columns[-1]):
            return False
        counts.add(len(columns))
        seen += 1
        if len(counts) > 1:
            return False
        if seen >= sample:
            break
    return seen > 0


def _resolve_tag_column(path: Path, line: int, num_columns: int, tag_column: int) -> int | None:
    if num_columns == 1:
        return None  # words only: a file to predict on
    index = tag_column if tag_column >= 0 else num_columns + tag_column
    if not 0 < index < num_columns:
        raise DataError(
            path,
            f"tag column {tag_column} does not exist in a line of {num_columns} columns (column 0 is the token)",
            line=line,
        )
    return index


def documents(sentences: Sequence[Sentence]) -> list[list[int]]:
    """Sentence indices grouped by document, in file order."""
    grouped: dict[int, list[int]] = {}
    for index, sentence in enumerate(sentences):
        grouped.setdefault(sentence.document, []).append(index)
    return list(grouped.values())


def hub_sentences(rows: Any) -> list[Sentence]:
    """The non-empty sentences of a Hub data set with ``tokens`` and ``ner_tags`` columns
    (conll2003, wnut_17, ...): one document; a row's number (from 1) stands for its line."""
    names = rows.features["ner_tags"].feature.names
    return [
        Sentence(list(row["tokens"]), [names[t] for t in row["ner_tags"]], 0, [i + 1] * len(row["tokens"]))
        for i, row in enumerate(rows)
        if row["tokens"]
    ]


def gold_in_scheme(
    path: str | os.PathLike,
    sentences: Sequence[Sentence],
    scheme: str,
    known_types: Collection[str] | None = None,
    unseen_tags: Literal["error", "map_to_o"] = "error",
) -> list[list[str]]:
    """The sentences' tags converted to ``scheme``. With ``known_types`` (a dev or test file: the
    train file's entity types), a tag of another type is a DataError naming the line, or with
    ``unseen_tags="map_to_o"`` read as O (with a warning)."""
    unseen = 0
    gold = []
    for sentence in sentences:
        tags = list(sentence.tags or [])
        for index, tag in enumerate(tags):
            entity_type = split_tag(tag)[1]
            if known_types is None or tag == OUTSIDE or entity_type in known_types:
                continue
            if unseen_tags == "error":
                raise DataError(
                    path,
                    f"tag {tag!r}: type {entity_type!r} is not in the train file's label set "
                    f"({', '.join(sorted(known_types)) or 'none'}); pass --data.unseen_tags map_to_o to read it as O",
                    line=sentence.lines[index],
                )
            tags[index] = OUTSIDE
            unseen += 1
        gold.append(convert_tags(tags, scheme))
    if unseen:
        log.warning("%s: %d tag(s) of types unseen in training read as O", path, unseen)
    return gold


# ----------------------------------------------------------------------------------------------
# Tag schemes


def tags_to_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entity spans ``(type, start, end_exclusive)`` of a tag sequence in any of the schemes.

    Follows the chunk rules of the conlleval script (and seqeval's default mode), so it reads
    IOB1, BIO and IOBES alike and is lenient the same way: an ``I-X`` after ``O`` or after
    another type starts an entity.
    """
    spans: list[tuple[str, int, int]] = []
    start: int | None = None
    previous_prefix, previous_type = OUTSIDE, ""
    for index, tag in enumerate([*tags, OUTSIDE]):
        prefix, entity_type = split_tag(tag)
        if start is not None and _ends_chunk(previous_prefix, prefix, previous_type, entity_type):
            spans.append((previous_type, start, index))
            start = None
        if prefix != OUTSIDE and (
            start is None or _starts_chunk(previous_prefix, prefix, previous_type, entity_type)
        ):
            start = index
        previous_prefix, previous_type = prefix, entity_type
    return spans


def _ends_chunk(previous: str, current: str, previous_type: str, current_type: str) -> bool:
    if previous in ("E", "S"):
        return True
    if previous in ("B", "I") and current in ("B", "S", OUTSIDE):
        return True
    return previous != OUTSIDE and previous_type != current_type


def _starts_chunk(previous: str, current: str, previous_type: str, current_type: str) -> bool:
    if current in ("B", "S"):
        return True
    if current in ("I", "E") and previous in ("E", "S", OUTSIDE):
        return True
    return current != OUTSIDE and previous_type != current_type


def spans_to_tags(spans: Iterable[tuple[str, int, int]], length: int, scheme: str) -> list[str]:
    """Write non-overlapping entity spans as a tag sequence in ``scheme``."""
    scheme = normalize_scheme(scheme)
    tags = [OUTSIDE] * length
    previous_end, previous_type = -1, ""
    for entity_type, start, end in sorted(spans, key=lambda span: span[1]):
        if scheme == "IOBES":
            if end - start == 1:
                tags[start] = f"S-{entity_type}"
            else:
                tags[start] = f"B-{entity_type}"
                tags[start + 1 : end - 1] = [f"I-{entity_type}"] * (end - start - 2)
                tags[end - 1] = f"E-{entity_type}"
        else:
            tags[start:end] = [f"I-{entity_type}"] * (end - start)
            # BIO marks every start; IOB1 only a start that touches an entity of the same type.
            if scheme == "BIO" or (previous_end == start and previous_type == entity_type):
                tags[start] = f"B-{entity_type}"
        previous_end, previous_type = end, entity_type
    return tags


def convert_tags(tags: Sequence[str], scheme: str) -> list[str]:
    """The same entities written in another scheme (IOB1 -> BIO, BIO -> IOBES, ...)."""
    return spans_to_tags(tags_to_spans(tags), len(tags), scheme)


def detect_scheme(sequences: Iterable[Sequence[str]]) -> str:
    """The scheme a file is written in: IOBES if it uses E-/S-, else BIO if some ``B-`` opens an
    entity that does not touch one of the same type (IOB1 never does that), else IOB1 if some
    ``I-`` opens an entity; a file without either reads the same in both, and we call it BIO."""
    opens_with_b = opens_with_i = False
    for tags in sequences:
        previous_prefix, previous_type = OUTSIDE, ""
        for tag in tags:
            prefix, entity_type = split_tag(tag)
            if prefix in ("E", "S"):
                return "IOBES"
            continues_same_type = previous_prefix in ("B", "I") and previous_type == entity_type
            opens_with_b |= prefix == "B" and not continues_same_type
            opens_with_i |= prefix == "I" and not continues_same_type
            previous_prefix, previous_type = prefix, entity_type
    return "IOB1" if opens_with_i and not opens_with_b else "BIO"


def label_names_for(entity_types: Iterable[str], scheme: str) -> list[str]:
    """The full label set of a scheme over entity types: "O" then each type's prefixes."""
    prefixes = ("B", "I", "E", "S") if normalize_scheme(scheme) == "IOBES" else ("B", "I")
    return [OUTSIDE] + [
        f"{prefix}-{entity_type}" for entity_type in sorted(set(entity_types)) for prefix in prefixes
    ]


def entity_types(label_names: Iterable[str]) -> list[str]:
    """The entity types of a label set, sorted."""
    return sorted({split_tag(label)[1] for label in label_names if label != OUTSIDE})


def allowed_transition(previous: str | None, current: str, scheme: str) -> bool:
    """May tag ``current`` follow tag ``previous`` (None: the sentence start) in ``scheme``?"""
    prefix, entity_type = split_tag(current)
    previous_prefix, previous_type = split_tag(previous) if previous is not None else (OUTSIDE, "")
    inside_entity = previous_prefix in ("B", "I")
    same_type = entity_type == previous_type
    if scheme == "IOBES":
        if inside_entity:  # an open entity must go on (I) or close (E) with its own type
            return prefix in ("I", "E") and same_type
        return prefix in (OUTSIDE, "B", "S")
    if scheme == "BIO":
        if prefix == "I":
            return inside_entity and same_type
        return prefix in (OUTSIDE, "B")
    if scheme == "IOB1":
        if prefix == "B":  # IOB1 uses B- only to separate two touching entities of one type
            return inside_entity and same_type
        return prefix in (OUTSIDE, "I")
    raise ValueError(f"unknown tag scheme {scheme!r}")


def allowed_end(last: str, scheme: str) -> bool:
    """May a sentence end on tag ``last``? Only IOBES forbids something (an open B-/I-)."""
    return scheme != "IOBES" or split_tag(last)[0] not in ("B", "I")


def is_valid_sequence(tags: Sequence[str], scheme: str) -> bool:
    """True if every transition, the start and the end are allowed in ``scheme``."""
    previous: str | None = None
    for tag in tags:
        if not allowed_transition(previous, tag, scheme):
            return False
        previous = tag
    return previous is None or allowed_end(previous, scheme)


# ----------------------------------------------------------------------------------------------
# Writing: the file again, with a predicted tag per token


class ConllPredictions:
    """Renders a CoNLL file again, sentence by sentence, each token line with the predicted tag as
    a new last column.

    This is conlleval's layout when the gold tag is the last column; a gold column elsewhere
    moves to the second-to-last place. -DOCSTART- lines get an O, separators stay empty lines.
    Sentences must be rendered in file order (``sentence``), then ``rest`` gives the trailing lines.
    With ``model_scheme`` (the scheme the tags come in), they are written in the scheme of the
    file's own gold column if it has one; tags already in that scheme are written as they come
    (argmax decoding's ``O I-X`` stays as it is).
    """

    def __init__(self, lines: Sequence[str], conll: ConllFile, model_scheme: str | None = None):
        self.lines, self.conll, self.next_line = lines, conll, 0  # 0-based index of the next line to write
        file_scheme = detect_scheme(s.tags for s in conll.sentences) if conll.has_tags else None
        self.convert_to = file_scheme if model_scheme and file_scheme != model_scheme else None

    def sentence(self, index: int, tags: Sequence[str]) -> list[str]:
        """The lines up to and including the last word of sentence ``index``."""
        last = self.conll.sentences[index].lines[-1] if self.conll.sentences[index].words else self.next_line
        return self._render_to(last, iter(convert_tags(tags, self.convert_to) if self.convert_to else tags))

    def rest(self) -> list[str]:
        """The lines after the last sentence."""
        return self._render_to(len(self.lines), iter(()))

    def _render_to(self, end: int, predicted: Iterator[str]) -> list[str]:
        rendered = [self._render(line, predicted) for line in self.lines[self.next_line : end]]
        self.next_line = max(self.next_line, end)
        return rendered

    def _render(self, line: str, predicted: Iterator[str]) -> str:
        if not line.strip():
            return ""
        columns = split_columns(line)
        gold_column = self.conll.tag_column
        if (
            gold_column is not None
            and gold_column != len(columns) - 1
            and len(columns) == self.conll.num_columns
        ):
            columns.append(columns.pop(gold_column))
        tag = OUTSIDE if columns[0] == DOCSTART else next(predicted)
        return self.conll.separator.join([*columns, tag])


def conll_lines_with_predictions(
    lines: Sequence[str], conll: ConllFile, tags: Sequence[Sequence[str]]
) -> Iterator[str]:
    """The whole file with predictions (see ``ConllPredictions``); ``tags`` per sentence, in order."""
    writer = ConllPredictions(lines, conll)
    for index, sentence_tags in enumerate(tags):
        yield from writer.sentence(index, sentence_tags)
    yield from writer.rest()
