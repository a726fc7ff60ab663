"""Plain text input for predict: one text per line, or ``a<TAB>b`` for sentence pairs."""

from __future__ import annotations

import os

from ..io import DataError, read_text_lines
from .glue import Example


def read_text(path: str | os.PathLike, pairs: bool | None = None) -> list[Example]:
    """Read a UTF-8 text file into unlabelled examples, skipping blank lines.

    ``pairs=True``: every line must be ``a<TAB>b``; ``pairs=False``: every line is one text and
    may not hold a TAB (it would silently become part of the text); ``pairs=None``: the first
    line decides and the rest must follow it. Example indices count the non-blank lines from 0.
    """
    examples: list[Example] = []
    why = "this task takes single texts"
    for line, text in enumerate(read_text_lines(path), 1):
        if not text.strip():
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
        examples.append(
            Example(
                index=str(len(examples)),
                text=fields[0],
                text_pair=fields[1] if pairs else None,
                label=None,
                line=line,
            )
        )
    if not examples:
        raise DataError(path, "empty file: no texts", line=1)
    return examples
