"""Plain text input for predict: one text per line, or ``a<TAB>b`` for sentence pairs.

Read lazily, line by line: a predict file of millions of lines is never held in memory (the
features are written to the cache as they are made, and the prediction records read the file
again, in step with the predictions).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from ..io import DataError, iter_text_lines
from .tables import Example


def iter_text(path: str | os.PathLike, pairs: bool | None = None) -> Iterator[Example | None]:
    """The examples of a UTF-8 text file, one item per line: an unlabelled ``Example``, or None
    for a blank line (it gets an empty prediction record, so that line i of the output answers
    line i of the input).

    ``pairs=True``: every line must be ``a<TAB>b``; ``pairs=False``: every line is one text and
    may not hold a TAB (it would silently become part of the text); ``pairs=None``: the first
    line decides and the rest must follow it. Example indices count the non-blank lines from 0.
    A file without any text is an error (raised once it has been read through).
    """
    why = "this task takes single texts"
    count = 0
    for line, text in enumerate(iter_text_lines(path), 1):
        if not text.strip():
            yield None
            continue
        fields = text.split("\t")
        if pairs is None:
            pairs, why = len(fields) > 1, "the first line holds a single text"
        if pairs and len(fields) != 2:
            raise DataError(
                path,
                f"expected a sentence pair 'a<TAB>b', found {len(fields)} tab-separated fields",
                line=line,
            )
        if not pairs and len(fields) != 1:
            raise DataError(path, f"expected one text per line, found a TAB ({why})", line=line)
        yield Example(
            index=str(count),
            text=fields[0],
            text_pair=fields[1] if pairs else None,
            label=None,
            line=line,
        )
        count += 1
    if not count:
        raise DataError(path, "empty file: no texts", line=1)


def read_text(path: str | os.PathLike, pairs: bool | None = None) -> list[Example]:
    """The non-blank lines of a text file as unlabelled examples (see ``iter_text``)."""
    return [example for example in iter_text(path, pairs) if example is not None]


class LineCursor:
    """Items of a re-readable stream by increasing index, without holding them: ``get(i)``
    reads forward to item ``i`` (and starts over when asked for an earlier one)."""

    def __init__(self, open_stream):
        self._open = open_stream
        self._items: Iterator | None = None
        self._next = 0

    def get(self, index: int):
        if self._items is None or index < self._next:
            self._items, self._next = iter(self._open()), 0
        while True:
            item = next(self._items)
            self._next += 1
            if self._next - 1 == index:
                return item
