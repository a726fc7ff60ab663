"""Readers for the GLUE tasks' original TSV files and for generic CSV/TSV/JSONL tables.

Every reader turns a file into a list of plain ``Example`` objects and reports bad input as a
``DataError`` naming the file, the line and the problem. Nothing here tokenises.

GLUE file quirks handled here (see ``GLUE_TASKS`` for the column names of each task):
- CoLA's train/dev files have no header (source, label, original judgement, sentence); its test
  file has one (``index<TAB>sentence``).
- MRPC's train/dev files start with a UTF-8 BOM; its test file replaces ``Quality`` with ``index``.
- Test files carry an index column and no label column; MNLI has ``dev_matched`` /
  ``dev_mismatched`` and ``test_matched`` / ``test_mismatched`` files with 16 / 10 columns where
  train has 12, so columns are found by header name rather than by position.
- Quotes are plain characters (the files have unbalanced ones), so a row is split on TABs only:
  what ``csv.QUOTE_NONE`` means. A quote-aware reader merges rows.
- STS-B labels are similarity scores from 0 to 5 (regression).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..io import DataError, UserError, atomic_open, read_text_lines


@dataclass(frozen=True)
class Example:
    """One input example, as read from a file."""

    index: str  # the file's index/id column; without one, the 0-based row number
    text: str
    text_pair: str | None = None
    label: str | float | None = None  # a label name, a regression score, or None (unlabelled)
    line: int = 0  # 1-based line in the file (the record's first line), for error messages


@dataclass(frozen=True)
class TaskSpec:
    """What a GLUE task's files hold and how the task is scored and submitted."""

    name: str
    text_column: str
    text_pair_column: str | None
    label_column: str
    index_column: str  # present in test files (and some train/dev files)
    label_names: tuple[str, ...] | None  # GLUE's names, in label-id order; None: regression
    metrics: tuple[str, ...]  # keys of tasks.metrics.glue, the first is the main metric
    submission_file: str
    # Column names of a file without a header (CoLA train/dev); None: every file has a header.
    implicit_header: tuple[str, ...] | None = None
    score_range: tuple[float, float] | None = None  # regression targets outside it are errors
    # What the labels mean, for people (predictions.jsonl): GLUE's files say "0"/"1" for some tasks.
    display_names: tuple[str, ...] | None = None

    def display_name(self, label: str) -> str:
        if self.display_names is None or self.label_names is None:
            return label
        return self.display_names[self.label_names.index(label)]

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def is_pair(self) -> bool:
        return self.text_pair_column is not None

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    def submission_name(self, predict_file: str | os.PathLike | None = None) -> str:
        """The file name GLUE's server expects for predictions on ``predict_file``.

        MNLI has two test sets; predictions on ``test_mismatched.tsv`` go to ``MNLI-mm.tsv``.
        """
        if self.name == "mnli" and predict_file is not None and "mismatched" in Path(predict_file).name:
            return "MNLI-mm.tsv"
        return self.submission_file


_BINARY = ("0", "1")
_NLI3 = ("entailment", "neutral", "contradiction")
_NLI2 = ("entailment", "not_entailment")

# Columns are header names; the label column is absent from test files, the index column from
# some train/dev files (then the row number stands in). Fields: name, text, text pair, label,
# index, label names, metrics (main first), submission file.
# fmt: off
GLUE_TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("cola", "sentence", None, "label", "index", _BINARY, ("mcc", "accuracy"), "CoLA.tsv",
                 implicit_header=("source", "label", "original_judgement", "sentence"),
                 display_names=("unacceptable", "acceptable")),
        TaskSpec("sst2", "sentence", None, "label", "index", _BINARY, ("accuracy",), "SST-2.tsv",
                 display_names=("negative", "positive")),
        TaskSpec("mrpc", "#1 String", "#2 String", "Quality", "index", _BINARY, ("f1", "accuracy"), "MRPC.tsv",
                 display_names=("not_equivalent", "equivalent")),
        TaskSpec("stsb", "sentence1", "sentence2", "score", "index", None, ("pearson", "spearman"), "STS-B.tsv",
                 score_range=(0.0, 5.0)),
        TaskSpec("qqp", "question1", "question2", "is_duplicate", "id", _BINARY, ("f1", "accuracy"), "QQP.tsv",
                 display_names=("not_duplicate", "duplicate")),
        TaskSpec("mnli", "sentence1", "sentence2", "gold_label", "index", _NLI3, ("accuracy",), "MNLI-m.tsv"),
        TaskSpec("qnli", "question", "sentence", "label", "index", _NLI2, ("accuracy",), "QNLI.tsv"),
        TaskSpec("rte", "sentence1", "sentence2", "label", "index", _NLI2, ("accuracy",), "RTE.tsv"),
        TaskSpec("wnli", "sentence1", "sentence2", "label", "index", _BINARY, ("accuracy",), "WNLI.tsv",
                 display_names=("not_entailment", "entailment")),
    )
}
# fmt: on


def get_task(name: str | TaskSpec) -> TaskSpec:
    """Look a GLUE task up by name; case, '-' and '_' are ignored (``SST-2`` is ``sst2``)."""
    if isinstance(name, TaskSpec):
        return name
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in GLUE_TASKS:
        raise UserError(f"unknown GLUE task {name!r}; choose one of: {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[key]


def read_glue(path: str | os.PathLike, task: str | TaskSpec, require_labels: bool = False) -> list[Example]:
    """Read a GLUE task's original TSV file (train, dev or test layout) into examples.

    Test files (no label column) give examples with ``label=None``; with ``require_labels`` such
    a file is an error instead (a training or validation file must be labelled).
    """
    spec = get_task(task)
    rows = _tsv_rows(path)
    first_line, first = rows[0]
    if spec.implicit_header is not None and spec.text_column not in first:
        header, body = list(spec.implicit_header), rows
    else:
        header, body = first, rows[1:]
    columns = _resolve_columns(
        path,
        header,
        text_column=spec.text_column,
        text_pair_column=spec.text_pair_column,
        label_column=spec.label_column,
        index_column=spec.index_column,
        require_labels=require_labels,
        line=first_line,
        optional_index=True,
    )
    return _examples_from_rows(
        path, body, header, columns, spec.label_names, spec.is_regression, spec.score_range
    )


SUBMISSION_HEADER = "index\tprediction"


def submission_line(task: str | TaskSpec, index: str, prediction: str | float) -> str:
    """One row of a GLUE submission file: a label name, or a score with 3 decimals for STS-B."""
    value = f"{float(prediction):.3f}" if get_task(task).is_regression else str(prediction)
    return f"{index}\t{value}"


def write_submission(
    path: str | os.PathLike, task: str | TaskSpec, indices: Sequence[str], predictions: Sequence[str | float]
) -> Path:
    """Write a GLUE submission file (``index<TAB>prediction``) atomically.

    ``predictions`` are label names for classification tasks and scores for STS-B.
    """
    spec = get_task(task)
    if len(indices) != len(predictions):
        raise ValueError(f"{len(indices)} indices but {len(predictions)} predictions")
    with atomic_open(path) as handle:
        handle.write(SUBMISSION_HEADER + "\n")
        for index, prediction in zip(indices, predictions, strict=True):
            handle.write(submission_line(spec, index, prediction) + "\n")
    return Path(path)


# --- generic tables -------------------------------------------------------------------------

FILE_FORMATS = ("csv", "tsv", "jsonl")


def read_table(
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
) -> list[Example]:
    """Read examples from a CSV, TSV or JSONL file, with columns given by name or 0-based position.

    The format comes from the file extension (``.csv``, ``.tsv``, ``.jsonl``/``.json``) unless
    ``file_format`` names it. CSV follows the standard quoting rules; TSV has no quoting at all
    (GLUE's convention). JSONL takes field names only. A file (or JSONL record set) without the
    label column gives unlabelled examples unless ``require_labels``. When ``label_names`` is
    given, a label outside it is an error; otherwise labels are kept as found (see
    ``infer_label_names``). With ``regression`` labels are read as floats.
    """
    fmt = (file_format or _format_from_suffix(path)).lower()
    if fmt not in FILE_FORMATS:
        raise UserError(f"{path}: unknown file format {fmt!r}; choose one of: {', '.join(FILE_FORMATS)}")
    if fmt == "jsonl":
        return _read_jsonl(
            path,
            text_column,
            text_pair_column,
            label_column,
            index_column,
            label_names,
            regression,
            require_labels,
        )
    rows = _csv_rows(path) if fmt == "csv" else _tsv_rows(path)
    if header:
        header_line, header_row = rows[0]
        body = rows[1:]
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
    return _examples_from_rows(path, body, header_row, columns, label_names, regression)


def infer_label_names(examples: Sequence[Example]) -> list[str]:
    """The distinct labels of ``examples`` in a stable order: numerically if all are integers."""
    names = {str(e.label) for e in examples if e.label is not None}

    def is_int(name: str) -> bool:
        return name.lstrip("-").isdigit()

    if names and all(is_int(n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


# --- internals ------------------------------------------------------------------------------

Row = tuple[int, list[str]]  # (1-based line number, fields)


def _non_empty(path: str | os.PathLike, rows: list[Row]) -> list[Row]:
    if not rows:
        raise DataError(path, "empty file: no rows", line=1)
    return rows


def _tsv_rows(path: str | os.PathLike) -> list[Row]:
    """Tab-separated rows with no quoting (csv.QUOTE_NONE semantics); blank lines are skipped."""
    lines = read_text_lines(path)
    return _non_empty(path, [(n, line.split("\t")) for n, line in enumerate(lines, 1) if line.strip()])


def _csv_rows(path: str | os.PathLike) -> list[Row]:
    """Standard CSV rows (quoted fields may hold commas and newlines); blank lines are skipped."""
    text = "\n".join(read_text_lines(path))
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[Row] = []
    previous_end = 0
    try:
        for fields in reader:
            start, previous_end = previous_end + 1, reader.line_num
            if any(f.strip() for f in fields):
                rows.append((start, fields))
    except csv.Error as err:
        raise DataError(path, f"malformed CSV: {err}", line=reader.line_num) from None
    return _non_empty(path, rows)


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


def _examples_from_rows(
    path: str | os.PathLike,
    rows: list[Row],
    header: list[str],
    columns: _Columns,
    label_names: Sequence[str] | None,
    regression: bool,
    score_range: tuple[float, float] | None = None,
) -> list[Example]:
    if not rows:
        raise DataError(path, "no examples (the file holds only a header)", line=1)
    needed = 1 + max(
        c for c in (columns.text, columns.text_pair, columns.label, columns.index) if c is not None
    )
    examples = []
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
            label = _parse_label(path, line, fields[columns.label], label_names, regression, score_range)
        examples.append(
            Example(
                index=str(row_number) if columns.index is None else fields[columns.index],
                text=fields[columns.text],
                text_pair=None if columns.text_pair is None else fields[columns.text_pair],
                label=label,
                line=line,
            )
        )
    return examples


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
) -> list[Example]:
    positional = [
        c for c in (text_column, text_pair_column, label_column, index_column) if isinstance(c, int)
    ]
    if positional:
        raise UserError(f"{path}: JSONL records have field names, not positions; got {positional}")
    records: list[tuple[int, dict]] = []
    for line, text in enumerate(read_text_lines(path), 1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(path, f"invalid JSON: {err.msg}", line=line) from None
        if not isinstance(record, dict):
            raise DataError(path, f"expected a JSON object, found {type(record).__name__}", line=line)
        records.append((line, record))
    if not records:
        raise DataError(path, "empty file: no records", line=1)

    # The first record decides whether the file is labelled; then every record must agree.
    labelled = label_column is not None and label_column in records[0][1]
    if require_labels and not labelled:
        problem = "no label column was given" if label_column is None else f"no field {label_column!r}"
        raise DataError(path, f"labels are required but the first record has {problem}", line=records[0][0])

    def field(line: int, record: dict, name: str) -> object:
        if name not in record:
            raise DataError(path, f"missing field {name!r}", line=line)
        return record[name]

    def text_field(line: int, record: dict, name: str) -> str:
        value = field(line, record, name)
        if not isinstance(value, str):
            raise DataError(path, f"field {name!r} must be a string, found {type(value).__name__}", line=line)
        return value

    examples = []
    for row_number, (line, record) in enumerate(records):
        label = None
        if labelled:
            value = field(line, record, label_column)
            if value is None:
                raise DataError(path, f"field {label_column!r} is null", line=line)
            label = _parse_label(path, line, value, label_names, regression)
        examples.append(
            Example(
                index=str(row_number) if index_column is None else str(field(line, record, index_column)),
                text=text_field(line, record, text_column),
                text_pair=None if text_pair_column is None else text_field(line, record, text_pair_column),
                label=label,
                line=line,
            )
        )
    return examples
