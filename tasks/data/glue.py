"""The GLUE tasks: their specs, their original TSV files, and GLUE's submission files.

The reader turns a file into plain ``Example`` objects (``tables`` has the generic readers) and reports bad input as a
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

import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import DataError, UserError, atomic_open, iter_text_lines, read_text_lines
from .tables import Example, _iter_examples_from_rows, _resolve_columns


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
    return list(iter_glue(path, task, require_labels, lines=read_text_lines(path)))


def iter_glue(
    path: str | os.PathLike,
    task: str | TaskSpec,
    require_labels: bool = False,
    lines: Iterable[str] | None = None,
) -> Iterator[Example]:
    """``read_glue`` one example at a time, reading the file as it goes (a test file to predict
    on may have millions of rows)."""
    spec = get_task(task)
    numbered = enumerate(iter_text_lines(path) if lines is None else lines, 1)
    rows = ((n, line.split("\t")) for n, line in numbered if line.strip())  # csv.QUOTE_NONE: plain TABs
    first_row = next(rows, None)
    if first_row is None:
        raise DataError(path, "empty file: no rows", line=1)
    first_line, first = first_row
    if spec.implicit_header is not None and spec.text_column not in first:
        header, body = list(spec.implicit_header), itertools.chain([first_row], rows)
    else:
        header, body = first, rows
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
    yield from _iter_examples_from_rows(
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


def submission_rows(
    task: str | TaskSpec, lookup: Callable[[int], Example]
) -> Callable[[int, Any], list[str]]:
    """How the prediction writer renders a GLUE submission file: the row of example ``i`` (its
    index from ``lookup(i)``, the predicted label or the STS-B score); a prediction of None (a blank
    line of a text file) is not an example of the submission and has no row."""
    spec = get_task(task)

    def render(example: int, prediction: Any) -> list[str]:
        if prediction is None:
            return []
        value = prediction.score if spec.is_regression else prediction.label
        return [submission_line(spec, lookup(example).index, value)]

    return render


# Column names of the GLUE data sets on the Hugging Face Hub (`--data.dataset nyu-mll/glue`).
HUB_GLUE_COLUMNS = {
    "cola": ("sentence", None),
    "sst2": ("sentence", None),
    "mrpc": ("sentence1", "sentence2"),
    "stsb": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
}


def hub_examples(
    rows: Iterable[dict[str, Any]],
    task: str,
    text_column: str,
    text_pair_column: str | None,
    label_column: str | None,
    label_names: Sequence[str] | None,
) -> list[Example]:
    """The examples of a Hugging Face Hub split (rows of a ``datasets.Dataset``), from the given
    columns, or for a GLUE task the hub's GLUE columns. ``idx`` is the index where there is one
    (else the row number); a class-label id becomes its name, and -1 (GLUE's unlabelled test rows)
    no label."""
    if task in HUB_GLUE_COLUMNS:
        (text_column, text_pair_column), label_column = HUB_GLUE_COLUMNS[task], "label"
    examples = []
    for i, row in enumerate(rows):
        label = row.get(label_column)
        if label is not None and label_names is not None and isinstance(label, int):
            label = label_names[label] if 0 <= label < len(label_names) else None
        examples.append(
            Example(
                index=str(row.get("idx", i)),
                text=row[text_column],
                text_pair=row[text_pair_column] if text_pair_column else None,
                label=label,
                line=i + 1,
            )
        )
    return examples
