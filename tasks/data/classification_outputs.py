"""What classification writes: ``predictions.jsonl``, GLUE's submission file, ``confusion_matrix.json``.

Predictions arrive as the module decodes them (``tasks.classification.Classified``: ``label`` and
``probabilities``, or ``score`` for regression); ``display`` turns a label name into what people
read (GLUE's files say "0"/"1" where SST-2 means negative/positive). The rows of GLUE's
submission file are written beside its reader, in ``glue.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..evaluation import OutputFile
from ..io import write_json
from .glue import GLUE_TASKS, SUBMISSION_HEADER, submission_rows
from .tables import Example


def display_names(task: str) -> Callable[[str], str]:
    """Label name -> what people read: GLUE's meaning of its label values; other tasks' names as they are."""
    spec = GLUE_TASKS.get(task)
    return spec.display_name if spec is not None else str


def prediction_files(
    path: Path,
    task: str,
    predict_file: str | None,
    lookup: Callable[[], Callable[[int], Example | None]],
    submission: bool = True,
) -> list[OutputFile]:
    """``predictions.jsonl`` at ``path`` (see ``prediction_records``) and, for a GLUE task with
    ``submission``, the submission file GLUE's server expects for ``predict_file`` beside it (GLUE's
    own label values, no row for a blank line). ``lookup()`` gives each file its own look-up of the
    examples by number: each reads them in order."""
    outputs = [OutputFile(path, prediction_records(lookup(), display_names(task)))]
    if task in GLUE_TASKS and submission:
        submission = path.parent / GLUE_TASKS[task].submission_name(predict_file)
        outputs.append(OutputFile(submission, submission_rows(task, lookup()), header=[SUBMISSION_HEADER]))
    return outputs


def prediction_records(
    lookup: Callable[[int], Example | None], display: Callable[[str], str]
) -> Callable[[int, Any], list[str]]:
    """How the prediction writer renders ``predictions.jsonl``: per example ``i`` (``lookup(i)``),
    ``{line, index, text[, text_pair], label, probabilities}`` with the labels' display names,
    ``{line, index, text[, text_pair], labels, probabilities}`` for multi-label (``labels``: each
    label over its threshold and its probability, most probable first), or
    ``{line, index, text[, text_pair], score}``; a blank line of a text file (None) is
    ``{line, text: ""}``, so that line i of the output answers line i of the input."""

    def render(example: int, prediction: Any) -> list[str]:
        item = lookup(example)
        if item is None:
            return [json.dumps({"line": example + 1, "text": ""})]
        return [json.dumps(prediction_record(item, prediction, display), ensure_ascii=False)]

    return render


def prediction_record(item: Example, prediction: Any, display: Callable[[str], str] = str) -> dict[str, Any]:
    """One example's record of ``predictions.jsonl`` (see ``prediction_records``): what predict
    writes and the plain predictor (``tasks.predictor``) returns."""
    fields: dict[str, Any] = {"line": item.line, "index": item.index, "text": item.text}
    if item.text_pair is not None:
        fields["text_pair"] = item.text_pair
    if prediction.score is not None:
        fields["score"] = prediction.score
    elif getattr(prediction, "labels", None) is not None:  # multi-label
        fields["labels"] = prediction.labels
        fields["probabilities"] = prediction.probabilities
    else:
        fields["label"] = display(prediction.label)
        fields["probabilities"] = {display(name): p for name, p in prediction.probabilities.items()}
    return fields


def confusion_matrix_writer(
    task: str, gold: Sequence[int], label_names: Sequence[str], suffix: str = ""
) -> Callable[[dict[int, Any], Path], list[Path]]:
    """After an evaluation: ``confusion_matrix<suffix>.json`` (``{labels, matrix}``: rows gold,
    columns predicted, labels by display name) in the run directory, for ``report``."""

    def write(predictions: dict[int, Any], run_dir: Path) -> list[Path]:
        matrix = [[0] * len(label_names) for _ in label_names]
        for example, prediction in predictions.items():
            matrix[gold[example]][label_names.index(prediction.label)] += 1
        labels = [display_names(task)(name) for name in label_names]
        return [write_json(run_dir / f"confusion_matrix{suffix}.json", {"labels": labels, "matrix": matrix})]

    return write
