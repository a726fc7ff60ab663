"""JSONL input, one JSON value a line, read as the file goes: the one reader of the task files.

Blank lines are skipped (editors and ``cat`` leave them); a line that is not JSON is a
``DataError`` naming the file and the line. Nothing here knows what the records mean.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

from ..io import DataError, iter_text_lines


def iter_jsonl(path: str | os.PathLike, lines: Iterable[str] | None = None) -> Iterator[tuple[int, Any]]:
    """(1-based line number, parsed value) for each non-blank line of ``path``.

    ``lines``: the file's lines when the caller has read them already (they are not read again);
    ``path`` then only names the file in errors.
    """
    for number, text in enumerate(iter_text_lines(path) if lines is None else lines, 1):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(path, f"not valid JSON: {err.msg} (column {err.colno})", line=number) from None
        yield number, value


def iter_jsonl_objects(
    path: str | os.PathLike, lines: Iterable[str] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``iter_jsonl``'s records, each of which must be a JSON object (a record with fields)."""
    for number, value in iter_jsonl(path, lines):
        if not isinstance(value, dict):
            raise DataError(path, f"expected a JSON object, found {type(value).__name__}", line=number)
        yield number, value
