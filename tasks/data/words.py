"""Raw text <-> words with character offsets, tokenised the way CoNLL files are; and raw text as a
format to tag: its words line by line, and a JSONL record of each line's entities."""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from ..io import iter_text_lines
from .conll import looks_like_conll, tags_to_spans
from .text import LineCursor

_CLITIC = re.compile(r"(?i)(?<=\w)(['’](?:s|re|ve|ll|d|m)|n['’]t)$")
_LONE_CLITIC = re.compile(r"(?i)^(?:['’](?:s|re|ve|ll|d|m)|n['’]t)$")  # "England 's", as CoNLL writes it
# U.S., e.g., an initial (J. Smith), a list's ordinal (1.): the final period belongs to the word
_INITIALISM = re.compile(r"^(?:\w\.)+$")


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


def _in_word(char: str) -> bool:
    return not char.isspace() and not is_punctuation(char) and not is_cjk(char)


def whole_word_span(text: str, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` widened so that it neither begins nor ends inside a word (a run of
    characters between spaces, punctuation and CJK characters, as BERT's basic tokenizer cuts
    them): a span that starts at the sub-token "##iffel" answers "Eiffel", not "iffel"."""
    while 0 < start < len(text) and _in_word(text[start - 1]) and _in_word(text[start]):
        start -= 1
    while 0 < end < len(text) and _in_word(text[end]) and _in_word(text[end - 1]):
        end += 1
    return start, end


def split_words(text: str) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of the words of a raw text line, tokenized the way
    CoNLL files are: whitespace separates words, punctuation at the edges of a word stands alone
    ("Paris," -> "Paris" ","), English clitics split off ("Obama's" -> "Obama" "'s") and a clitic
    alone stays whole ("England 's"), an initialism keeps its period ("U.S.", "J. Smith", a list's
    "1."), and each CJK character is a word of its own."""
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
    if _LONE_CLITIC.match(text[start:end]):
        return [(start, end)]
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


def entity_record(line: str, word_spans: Sequence[tuple[int, int]], tags: Sequence[str]) -> dict[str, Any]:
    """The JSONL record of one raw text line: the line and its entities with character offsets."""
    entities = []
    for entity_type, first, last in tags_to_spans(tags):
        start, end = word_spans[first][0], word_spans[last - 1][1]
        entities.append({"text": line[start:end], "type": entity_type, "start": start, "end": end})
    return {"text": line, "entities": entities}


def text_records(
    lines: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], tags: Sequence[Sequence[str]]
) -> list[dict[str, Any]]:
    """``entity_record`` of every line."""
    return [entity_record(*item) for item in zip(lines, spans, tags, strict=True)]


def line_words(path: str | os.PathLike) -> Iterator[list[str]]:
    """The words of each line of a raw text file (``split_words``), read lazily."""
    for line in iter_text_lines(path):
        yield [line[a:b] for a, b in split_words(line)]


class LineWordCounts:
    """The number of words of each line of a text file, read on demand in increasing order (a file
    of millions of lines is never held in memory)."""

    def __init__(self, path: str | os.PathLike):
        self.lines = LineCursor(lambda: iter_text_lines(path))

    def __getitem__(self, index: int) -> int:
        return len(split_words(self.lines.get(index)))


def entity_lines(path: str | os.PathLike) -> Callable[[int, Sequence[str]], list[str]]:
    """The writer of raw-text predictions: ``render(i, tags)`` gives the JSONL line of line ``i``
    of ``path`` (``entity_record``), reading the file again in step with the predictions."""
    lines = LineCursor(lambda: iter_text_lines(path))

    def render(index: int, tags: Sequence[str]) -> list[str]:
        line = lines.get(index)
        return [json.dumps(entity_record(line, split_words(line), tags), ensure_ascii=False)]

    return render


def reads_as_text(path: str | os.PathLike, predict_format: Literal["auto", "conll", "text"]) -> bool:
    """Whether a file to predict on is raw text (one text per line) rather than CoNLL columns:
    as ``predict_format`` says; ``auto``: CoNLL when the first lines look like CoNLL columns
    (whatever the extension: CoNLL-2003 comes as ``test.txt``), else text for ``.txt``/``.text``
    files and CoNLL for the others."""
    if predict_format != "auto":
        return predict_format == "text"
    if Path(path).is_file() and looks_like_conll(path):
        return False
    return Path(path).suffix.lower() in (".txt", ".text")
