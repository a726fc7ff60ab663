"""Pre-training text: documents made of sentences, from the three layouts people keep corpora in.

* Google's pre-training format (``create_pretraining_data.py``): one sentence per line, a blank
  line between documents.
* One document per line (``document_per_line``): each line is a document, cut into sentences.
* JSONL (``.jsonl``): one JSON object per line, its ``text_field`` a document, cut into sentences.

Sentences matter for next-sentence prediction (its segments are runs of whole sentences); masked
LM without NSP packs the text regardless of where sentences end.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ..io import DataError, iter_text_lines
from .jsonl import iter_jsonl

# A sentence ends at . ! ? (and their CJK forms) followed by a space, or straight after a CJK one.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)|(?<=[。！？])")


@dataclass
class Document:
    sentences: list[str]
    line: int  # where it starts in the file, for messages


def split_sentences(text: str) -> list[str]:
    """A document's text cut after sentence-final punctuation (a simple rule: abbreviations such
    as "e.g. x" are cut too, which only moves an NSP segment boundary)."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def iter_documents(
    path: str | os.PathLike, document_per_line: bool = False, text_field: str = "text"
) -> Iterator[Document]:
    """The documents of a corpus file, in order (empty documents are skipped)."""
    if str(path).lower().endswith(".jsonl"):
        yield from _iter_jsonl(path, text_field)
        return
    sentences: list[str] = []
    start = 1
    for number, line in enumerate(iter_text_lines(path), 1):
        text = line.strip()
        if document_per_line:
            if text:
                yield Document(split_sentences(text), number)
            continue
        if not text:  # Google's document boundary
            if sentences:
                yield Document(sentences, start)
            sentences = []
            continue
        if not sentences:
            start = number
        sentences.append(text)
    if sentences:
        yield Document(sentences, start)


def _iter_jsonl(path: str | os.PathLike, text_field: str) -> Iterator[Document]:
    for number, record in iter_jsonl(path):
        if not isinstance(record, dict) or text_field not in record:
            keys = ", ".join(sorted(record)) if isinstance(record, dict) else type(record).__name__
            raise DataError(
                path, f"no '{text_field}' field (has: {keys}); choose it with --data.text_field", line=number
            )
        text = record[text_field]
        if not isinstance(text, str):
            raise DataError(path, f"'{text_field}' is {type(text).__name__}, not a string", line=number)
        if text.strip():
            yield Document(split_sentences(text), number)
