"""Generic CSV/TSV/JSONL tables of examples, and the column machinery the GLUE reader shares.

Every reader yields plain ``Example`` objects, reading the file as it goes, and reports bad input
as a ``DataError`` naming the file, the line and the problem. Nothing here tokenises.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import DataError, UserError, iter_text_lines
from .jsonl import iter_jsonl_objects


@dataclass(frozen=True)
class Example:
    """One input example, as read from a file."""

    index: str  # the file's index/id column; without one, the 0-based row number
    text: str
    text_pair: str | None = None
    # A label name, a regression score, a multi-label task's names (a tuple, maybe empty), or None.
    label: str | float | tuple[str, ...] | None = None
    line: int = 0  # 1-based line in the file (the record's first line), for error messages


FILE_FORMATS = ("csv", "tsv", "jsonl")


def read_table(*args: Any, **kwargs: Any) -> list[Example]:
    """``iter_table``'s examples as a list."""
    return list(iter_table(*args, **kwargs))


def iter_table(
    path: str | os.PathLike,
    text_column: str | int,
    text_pair_column: str | int | None = None,
    label_column: str | int | None = None,
    index_column: str | int | None = None,
    label_names: Sequence[str] | None = None,
    regression: bool = False,
    require_labels: bool = False,
    header: bool = True,
    file_format: str | None = None,
    label_separator: str | None = None,
) -> Iterator[Example]:
    """Read examples from a CSV, TSV or JSONL file, with columns given by name or 0-based position.

    The format comes from the file extension (``.csv``, ``.tsv``, ``.jsonl``/``.json``) unless
    ``file_format`` names it. CSV follows the standard quoting rules; TSV has no quoting at all
    (GLUE's convention). JSONL takes field names only. A file (or JSONL record set) without the
    label column gives unlabelled examples unless ``require_labels``. When ``label_names`` is
    given, a label outside it is an error; otherwise labels are kept as found (see
    ``infer_label_names``). With ``regression`` labels are read as floats. With ``label_separator``
    (multi-label) each label field holds several names: a JSON list in JSONL, names joined by the
    separator in CSV/TSV; an empty list or field is a valid example with no labels.
    """
    fmt = (file_format or _format_from_suffix(path)).lower()
    if fmt not in FILE_FORMATS:
        raise UserError(f"{path}: unknown file format {fmt!r}; choose one of: {', '.join(FILE_FORMATS)}")
    if fmt == "jsonl":
        yield from _read_jsonl(
            path,
            text_column,
            text_pair_column,
            label_column,
            index_column,
            label_names,
            regression,
            require_labels,
            label_separator,
        )
        return
    rows = _csv_rows(path) if fmt == "csv" else _tsv_rows(path)
    if header:
        header_line, header_row = next(rows)
        body = rows
    else:
        named = [c for c in (text_column, text_pair_column, label_column, index_column) if isinstance(c, str)]
        if named:
            raise UserError(
                f"{path}: columns {named} are given by name but header=False; give 0-based positions"
            )
        header_line, header_row, body = 0, [], rows
    columns = _resolve_columns(
        path,
        header_row,
        text_column=text_column,
        text_pair_column=text_pair_column,
        label_column=label_column,
        index_column=index_column,
        require_labels=require_labels,
        line=header_line,
    )
    yield from _iter_examples_from_rows(
        path, body, header_row, columns, label_names, regression, label_separator=label_separator
    )


def infer_label_names(examples: Sequence[Example]) -> list[str]:
    """The distinct labels of ``examples`` in a stable order: numerically if all are integers."""
    names = {
        str(name)
        for e in examples
        if e.label is not None
        for name in (e.label if isinstance(e.label, tuple) else (e.label,))
    }

    def is_int(name: str) -> bool:
        return name.lstrip("-").isdigit()

    if names and all(is_int(n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


# --- internals ------------------------------------------------------------------------------

Row = tuple[int, list[str]]  # (1-based line number, fields)


def _non_empty(path: str | os.PathLike, rows: Iterator[Row]) -> Iterator[Row]:
    """``rows``, or a DataError when there is none."""
    first = next(rows, None)
    if first is None:
        raise DataError(path, "empty file: no rows", line=1)
    return itertools.chain([first], rows)


def _tsv_rows(path: str | os.PathLike) -> Iterator[Row]:
    """Tab-separated rows with no quoting (csv.QUOTE_NONE semantics); blank lines are skipped."""
    lines = enumerate(iter_text_lines(path), 1)
    return _non_empty(path, ((n, line.split("\t")) for n, line in lines if line.strip()))


def _csv_rows(path: str | os.PathLike) -> Iterator[Row]:
    """Standard CSV rows (quoted fields may hold commas and newlines); blank lines are skipped."""

    def rows() -> Iterator[Row]:
        reader = csv.reader(line + "\n" for line in iter_text_lines(path))
        previous_end = 0
        try:
            for fields in reader:
                start, previous_end = previous_end + 1, reader.line_num
                if any(f.strip() for f in fields):
                    yield start, fields
        except csv.Error as err:
            raise DataError(path, f"malformed CSV: {err}", line=reader.line_num) from None

    return _non_empty(path, rows())


@dataclass(frozen=True)
class _Columns:
    """0-based positions of the columns a reader needs; None where the file has no such column."""

    text: int
    text_pair: int | None
    label: int | None
    index: int | None
    width: int | None  # the number of fields every row must have (the header's), if known


def _resolve_columns(
    path: str | os.PathLike,
    header: list[str],
    *,
    text_column: str | int,
    text_pair_column: str | int | None,
    label_column: str | int | None,
    index_column: str | int | None,
    require_labels: bool,
    line: int,
    optional_index: bool = False,
) -> _Columns:
    def position(column: str | int, what: str) -> int:
        if isinstance(column, int):
            if column < 0 or (header and column >= len(header)):
                raise DataError(
                    path, f"{what} column {column} is out of range ({len(header)} columns)", line=line
                )
            return column
        if column not in header:
            raise DataError(path, f"no {what} column {column!r} in the header {header}", line=line)
        return header.index(column)

    text = position(text_column, "text")  # first: a file of another task fails on its text column
    label: int | None = None
    if label_column is not None:
        if isinstance(label_column, int) or label_column in header:
            label = position(label_column, "label")
        elif require_labels:
            raise DataError(
                path,
                f"no label column {label_column!r} in the header {header} (is this a test file?)",
                line=line,
            )
    elif require_labels:
        raise UserError(f"{path}: labels are required but no label column was given")
    index = None
    if index_column is not None and not (optional_index and index_column not in header):
        index = position(index_column, "index")
    return _Columns(
        text=text,
        text_pair=None if text_pair_column is None else position(text_pair_column, "text pair"),
        label=label,
        index=index,
        width=len(header) or None,
    )


def _iter_examples_from_rows(
    path: str | os.PathLike,
    rows: Iterable[Row],
    header: list[str],
    columns: _Columns,
    label_names: Sequence[str] | None,
    regression: bool,
    score_range: tuple[float, float] | None = None,
    label_separator: str | None = None,
) -> Iterator[Example]:
    needed = 1 + max(
        c for c in (columns.text, columns.text_pair, columns.label, columns.index) if c is not None
    )
    row_number = -1
    for row_number, (line, fields) in enumerate(rows):
        if columns.width is not None and len(fields) != columns.width:
            # A TAB inside a text shifts every later column, so more fields is as wrong as fewer.
            raise DataError(
                path,
                f"expected {columns.width} tab-separated columns {header}, found {len(fields)}",
                line=line,
            )
        if len(fields) < needed:
            raise DataError(path, f"expected at least {needed} columns, found {len(fields)}", line=line)
        label = None
        if columns.label is not None:
            value = fields[columns.label]
            if label_separator is not None:
                label = _parse_labels(path, line, _split_names(value, label_separator), label_names)
            else:
                label = _parse_label(path, line, value, label_names, regression, score_range)
        yield Example(
            index=str(row_number) if columns.index is None else fields[columns.index],
            text=fields[columns.text],
            text_pair=None if columns.text_pair is None else fields[columns.text_pair],
            label=label,
            line=line,
        )
    if row_number < 0:
        raise DataError(path, "no examples (the file holds only a header)", line=1)


def _parse_label(
    path: str | os.PathLike,
    line: int,
    value: object,
    label_names: Sequence[str] | None,
    regression: bool,
    score_range: tuple[float, float] | None = None,
) -> str | float:
    if regression:
        try:
            score = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            score = math.nan
        if not math.isfinite(score):
            raise DataError(path, f"score {value!r} is not a number", line=line)
        if score_range is not None and not score_range[0] <= score <= score_range[1]:
            raise DataError(path, f"score {score} is outside {score_range[0]}..{score_range[1]}", line=line)
        return score
    label = str(value)
    if label_names is not None and label not in label_names:
        raise DataError(path, f"label {label!r} is not one of {', '.join(label_names)}", line=line)
    return label


def _split_names(value: str, separator: str) -> list[str]:
    """A CSV/TSV multi-label field: names joined by ``separator``, spaces around them dropped; an
    empty field is no labels."""
    return [name.strip() for name in value.split(separator)] if value.strip() else []


def _parse_labels(
    path: str | os.PathLike, line: int, value: object, label_names: Sequence[str] | None
) -> tuple[str, ...]:
    """A multi-label example's names, each checked as a single label is; repeats count once."""
    if not isinstance(value, list):
        raise DataError(path, f"labels must be a list of names, found {type(value).__name__}", line=line)
    if any(str(name).strip() == "" for name in value):
        raise DataError(path, "an empty label name in the label list", line=line)
    names = [_parse_label(path, line, name, label_names, regression=False) for name in value]
    return tuple(dict.fromkeys(names))


def _format_from_suffix(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix == "json":
        return "jsonl"
    if suffix not in FILE_FORMATS:
        raise UserError(
            f"{path}: cannot tell the format from the extension; set the file format (csv, tsv, jsonl)"
        )
    return suffix


def _read_jsonl(
    path: str | os.PathLike,
    text_column: str | int,
    text_pair_column: str | int | None,
    label_column: str | int | None,
    index_column: str | int | None,
    label_names: Sequence[str] | None,
    regression: bool,
    require_labels: bool,
    label_separator: str | None = None,
) -> Iterator[Example]:
    positional = [
        c for c in (text_column, text_pair_column, label_column, index_column) if isinstance(c, int)
    ]
    if positional:
        raise UserError(f"{path}: JSONL records have field names, not positions; got {positional}")

    records = iter_jsonl_objects(path)
    first = next(records, None)
    if first is None:
        raise DataError(path, "empty file: no records", line=1)
    records = itertools.chain([first], records)

    # The first record decides whether the file is labelled; then every record must agree.
    labelled = label_column is not None and label_column in first[1]
    if require_labels and not labelled:
        problem = "no label column was given" if label_column is None else f"no field {label_column!r}"
        raise DataError(path, f"labels are required but the first record has {problem}", line=first[0])

    def field(line: int, record: dict, name: str) -> object:
        if name not in record:
            raise DataError(path, f"missing field {name!r}", line=line)
        return record[name]

    def text_field(line: int, record: dict, name: str) -> str:
        value = field(line, record, name)
        if not isinstance(value, str):
            raise DataError(path, f"field {name!r} must be a string, found {type(value).__name__}", line=line)
        return value

    for row_number, (line, record) in enumerate(records):
        label = None
        if labelled:
            value = field(line, record, label_column)
            if value is None:
                raise DataError(path, f"field {label_column!r} is null", line=line)
            if label_separator is not None:  # multi-label: a JSON list of names
                label = _parse_labels(path, line, value, label_names)
            else:
                label = _parse_label(path, line, value, label_names, regression)
        yield Example(
            index=str(row_number) if index_column is None else str(field(line, record, index_column)),
            text=text_field(line, record, text_column),
            text_pair=None if text_pair_column is None else text_field(line, record, text_pair_column),
            label=label,
            line=line,
        )
