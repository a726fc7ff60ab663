"""What classification's ``predict`` reads: a text file (a line each), a GLUE TSV or a generic
table, one item per example (None: a blank line of a text file). Shared by the data module and
the plain predict (``tasks.predictor``)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..features.classification import is_multilabel, is_regression
from .glue import GLUE_TASKS, iter_glue
from .tables import Example, iter_table
from .text import iter_text


def iter_predict_file(
    path: str | os.PathLike,
    task: str,
    is_pair: bool,
    text_column: str | int = "text",
    text_pair_column: str | int | None = None,
    index_column: str | int | None = None,
    header: bool = True,
    label_names: Sequence[str] | None = None,
    label_separator: str = ",",
) -> Iterator[Example | None]:
    """A predict file's examples in order, read as they are asked for (it may be huge)."""
    if Path(path).suffix.lower() == ".txt":
        return iter_text(path, pairs=is_pair)
    if task in GLUE_TASKS:
        return iter_glue(path, task, require_labels=False)
    separator = label_separator if is_multilabel(task) else None
    columns = (text_column, text_pair_column, None, index_column)
    return iter_table(
        path, *columns, label_names, is_regression(task), False, header, label_separator=separator
    )
