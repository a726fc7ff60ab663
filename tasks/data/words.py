"""Raw text <-> words with character offsets, tokenised the way CoNLL files are."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from .conll import tags_to_spans

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
