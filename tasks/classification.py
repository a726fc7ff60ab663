"""Sequence classification and regression: single sentences and sentence pairs (GLUE and generic files)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .data.glue import GLUE_TASKS, SUBMISSION_HEADER, get_task, iter_glue, read_glue, submission_line
from .data.tables import Example, infer_label_names, iter_table, read_table
from .data.text import LineCursor, iter_text
from .datamodule import Prepared, TaskDataModule, check_at_least
from .evaluation import Evaluation, OutputFile
from .io import UserError, write_json
from .metrics.glue import compute_metrics
from .module import TaskModule

GENERIC_TASKS = ("classification", "regression")
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


def normalise_task(task: str) -> str:
    """``SST-2`` -> ``sst2``; an unknown name is an error listing the known ones."""
    name = str(task).lower().replace("-", "").replace("_", "")
    if name not in GLUE_TASKS and name not in GENERIC_TASKS:
        raise UserError(
            f"unknown task {task!r}; choose a GLUE task ({', '.join(GLUE_TASKS)}) "
            f"or one of {', '.join(GENERIC_TASKS)}"
        )
    return name


def is_regression(task: str | None) -> bool:
    return task in ("stsb", "regression")


def metric_names(task: str | None, num_labels: int) -> tuple[str, ...]:
    """GLUE's metrics for a GLUE task; accuracy (+ F1 of label 1 when binary) or correlations otherwise."""
    if task in GLUE_TASKS:
        return GLUE_TASKS[task].metrics
    if is_regression(task):
        return ("pearson", "spearman")
    return ("accuracy", "f1") if num_labels == 2 else ("accuracy",)


class ClassificationDataModule(TaskDataModule):
    """GLUE TSVs (``task`` = cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli) or generic CSV/TSV/JSONL.

    Args:
        task: a GLUE task name, or ``classification`` / ``regression`` for generic files.
        text_column, text_pair_column, label_column, index_column: generic files' columns (names,
            or 0-based positions with ``header: false``); GLUE tasks know theirs.
        labels: the label set in id order (default: GLUE's, or the sorted labels of the train file).
        validation_mismatched_file: MNLI's dev_mismatched.tsv, scored as ``val/accuracy_mm``.
        header: whether generic CSV/TSV files start with a header row.
    """

    def __init__(
        self,
        task: str = "classification",
        text_column: str | int = "text",
        text_pair_column: str | int | None = None,
        label_column: str | int | None = "label",
        index_column: str | int | None = None,
        labels: list[str] | None = None,
        validation_mismatched_file: str | None = None,
        header: bool = True,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.text_column, self.text_pair_column = text_column, text_pair_column
        self.label_column, self.index_column, self.header = label_column, index_column, header
        self.labels = list(labels) if labels is not None else None
        self.validation_mismatched_file = validation_mismatched_file
        self.examples: dict[str, list[Example]] = {}
        # Decided once, here: the CLI links both to the model right after instantiation.
        self.task = normalise_task(task)
        if self.is_pair:
            check_at_least(
                "max_seq_length", self._max_seq_length, 5, "a token of each text, [CLS] and two [SEP]"
            )
        self.label_names = self._decide_label_names()

    def _decide_label_names(self) -> list[str] | None:
        """Label names in id order; None for regression."""
        if is_regression(self.task):
            return None
        if self.labels is not None:
            return list(self.labels)
        if self.task in GLUE_TASKS:
            return list(GLUE_TASKS[self.task].label_names)
        if self.train_file is not None:
            return infer_label_names(self.read("train"))
        if self.dataset is not None:
            return self._hub_label_names()
        raise UserError(
            "the label set is unknown: give --data.train_file, --data.labels, or a "
            "checkpoint (--ckpt_path) that stores it"
        )

    @property
    def is_pair(self) -> bool:
        if self.task in GLUE_TASKS:
            return GLUE_TASKS[self.task].is_pair
        return self.text_pair_column is not None

    # -- reading -------------------------------------------------------------------------------

    def read(self, split: str, path: str | None = None) -> list[Example]:
        """Examples of a split, from its local file or the hub data set."""
        path = path or self.split_file(split)
        key = f"{split}:{path}"
        if key not in self.examples:
            self.examples[key] = self._read(split, path)
        return self.examples[key]

    def _read(self, split: str, path: str | None) -> list[Example]:
        labelled = split in ("train", "validation")
        if path is None:
            hub = self.hub_split(split)
            if hub is None:
                raise UserError(f"no {split} data: set --data.{split}_file")
            return self._examples_from_hub(hub)
        if self._streams(split, path):
            return [example for example in iter_text(path, pairs=self.is_pair) if example is not None]
        if self.task in GLUE_TASKS:
            return read_glue(path, self.task, require_labels=labelled)
        # Generic files: the train file defines the label set unless --data.labels does.
        inferring = split == "train" and self.labels is None
        known = None if is_regression(self.task) or inferring else self.label_names
        return read_table(
            path,
            self.text_column,
            self.text_pair_column,
            self.label_column if split != "predict" else None,
            self.index_column,
            label_names=known,
            regression=is_regression(self.task),
            require_labels=labelled,
            header=self.header,
        )

    def _examples_from_hub(self, rows) -> list[Example]:
        text_column, pair_column = HUB_GLUE_COLUMNS.get(self.task, (self.text_column, self.text_pair_column))
        names = None if is_regression(self.task) else self.label_names
        examples = []
        for i, row in enumerate(rows):
            label = row.get(self.label_column if self.task not in GLUE_TASKS else "label")
            if label is not None and names is not None and isinstance(label, int):
                label = names[label] if 0 <= label < len(names) else None  # -1 marks unlabelled test rows
            examples.append(
                Example(
                    index=str(row.get("idx", i)),
                    text=row[text_column],
                    text_pair=row[pair_column] if pair_column else None,
                    label=label,
                    line=i + 1,
                )
            )
        return examples

    def _hub_label_names(self) -> list[str]:
        feature = self.hub_split("train").features.get(self.label_column)
        return list(feature.names) if hasattr(feature, "names") else infer_label_names(self.read("train"))

    # -- features ------------------------------------------------------------------------------

    def _gold(self, example: Example) -> int | float | None:
        if example.label is None:
            return None
        return (
            float(example.label) if is_regression(self.task) else self.label_names.index(str(example.label))
        )

    def _streams(self, split: str, path: str | None) -> bool:
        """A predict file (text, GLUE TSV or a generic table): read lazily, never held whole."""
        return split == "predict" and path is not None

    def _iter_predict(self, path: str) -> Iterator[Example | None]:
        """The predict file's items in order: for a text file one per line (None: a blank line)."""
        if Path(path).suffix.lower() == ".txt":
            return iter_text(path, pairs=self.is_pair)
        if self.task in GLUE_TASKS:
            return iter_glue(path, self.task)
        return iter_table(
            path,
            self.text_column,
            self.text_pair_column,
            None,
            self.index_column,
            regression=is_regression(self.task),
            header=self.header,
        )

    def _row(self, example: Example) -> dict[str, Any]:
        return {"text": example.text, "text_pair": example.text_pair or "", "label": self._gold(example)}

    def build(self, split: str, path: str | None = None):
        pair, max_length, tokenizer = self.is_pair, self.max_seq_length, self.tokenizer

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            encoded = tokenizer(
                batch["text"],
                batch["text_pair"] if pair else None,
                truncation="longest_first",
                max_length=max_length,
                return_attention_mask=True,
            )
            features = {k: encoded[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
            features["example"] = batch["example"]  # the example (input line) each row answers
            if all(label is not None for label in batch["label"]):
                features["labels"] = batch["label"]
            return features

        settings = {"task": self.task, "pair": pair, "labels": self.label_names}
        name = Path(path or self.split_file(split) or "hub").name
        if self._streams(split, path):

            def rows() -> Iterator[dict[str, Any] | None]:
                for example in self._iter_predict(path):
                    yield None if example is None else self._row(example)

            return self.featurize_stream(f"{split}-{name}", path, rows, tokenize, settings)
        examples = self.read(split, path)
        rows = [{**self._row(e), "example": i} for i, e in enumerate(examples)]
        return self.featurize(f"{split}-{name}", rows, tokenize, settings), len(examples)

    def prepare(self, split: str) -> list[Prepared]:
        paths = [self.split_file(split)]
        if split == "validation" and self.validation_mismatched_file:
            paths.append(self.validation_mismatched_file)
        prepared = []
        for path, suffix in zip(paths, ("", "_mm"), strict=False):  # MNLI: matched, then mismatched
            if self._streams(split, path):
                prepared.append(self._prepare_stream(path))
                continue
            examples = self.read(split, path)
            gold = [self._gold(e) for e in examples]
            evaluation = Evaluation(
                split,
                str(path or f"{self.dataset}[{split}]"),
                windows=[1] * len(examples),
                gold=gold if all(g is not None for g in gold) else None,
                context=examples,
                metric_suffix=suffix,
                outputs=self._outputs(lambda examples=examples: examples) if split == "predict" else (),
                write_artifacts=self._confusion_writer(suffix, gold)
                if split != "predict" and self.label_names
                else None,
            )
            features, _ = self.build(split, path)
            prepared.append(Prepared(features, evaluation))
        return prepared

    def _prepare_stream(self, path: str) -> Prepared:
        """A predict text file, in memory that does not grow with it: the features are memory-
        mapped from the cache, the evaluation holds one byte per line (1: a text, 0: a blank line),
        and the records read the file again as the predictions come."""
        features, num_lines = self.build("predict", path)
        windows = np.zeros(num_lines, dtype=np.int8)
        if len(features):
            windows[features.data.column("example").to_numpy()] = 1
        evaluation = Evaluation(
            "predict",
            str(path),
            windows=windows,
            outputs=self._outputs(lambda: LineCursor(lambda: self._iter_predict(path))),
        )
        return Prepared(features, evaluation)

    # -- predictions ---------------------------------------------------------------------------

    def _confusion_writer(self, suffix: str, gold: list[int | None]):
        """After an evaluation: ``confusion_matrix<suffix>.json`` ({labels, matrix}: rows gold,
        columns predicted), the latest evaluation's, for ``report``."""
        names = self.label_names

        def write(predictions: dict[int, Classified], run_dir: Path) -> list[Path]:
            if any(g is None for g in gold):  # an unlabelled test file
                return []
            matrix = [[0] * len(names) for _ in names]
            for example, prediction in predictions.items():
                matrix[gold[example]][names.index(prediction.label)] += 1
            spec = GLUE_TASKS.get(self.task)
            labels = [spec.display_name(name) for name in names] if spec is not None else names
            return [
                write_json(run_dir / f"confusion_matrix{suffix}.json", {"labels": labels, "matrix": matrix})
            ]

        return write

    def _outputs(self, source: Callable[[], Any]) -> list[OutputFile]:
        """``predictions.jsonl`` (``{line, index, text, label, probabilities}`` with the labels' names,
        or ``{line, index, text, score}``; ``{line, text: ""}`` for a blank line of a text file), and
        for GLUE tasks the submission file (``index<TAB>prediction``, in GLUE's own label values,
        without the blank lines) beside it.

        ``source()`` gives what looks the examples up by number (a list, or a ``LineCursor`` that
        reads the file forward): one per output file, each reads them in order."""

        spec = GLUE_TASKS.get(self.task)
        display = spec.display_name if spec is not None else str
        records = source()

        def record(example: int, prediction: Classified | None) -> list[str]:
            item = records[example] if isinstance(records, list) else records.get(example)
            if item is None:  # a blank line
                return [json.dumps({"line": example + 1, "text": ""})]
            fields: dict[str, Any] = {"line": item.line, "index": item.index, "text": item.text}
            if item.text_pair is not None:
                fields["text_pair"] = item.text_pair
            if prediction.score is not None:
                fields["score"] = prediction.score
            else:
                fields["label"] = display(prediction.label)
                fields["probabilities"] = {display(name): p for name, p in prediction.probabilities.items()}
            return [json.dumps(fields, ensure_ascii=False)]

        jsonl = self.predictions_path()
        outputs = [OutputFile(jsonl, record)]
        if self.task in GLUE_TASKS:
            spec = get_task(self.task)
            indices = source()

            def submission(example: int, prediction: Classified | None) -> list[str]:
                if prediction is None:  # a blank line: not an example of the submission
                    return []
                item = indices[example] if isinstance(indices, list) else indices.get(example)
                value = prediction.score if spec.is_regression else prediction.label
                return [submission_line(spec, item.index, value)]

            path = jsonl.parent / spec.submission_name(self.predict_file)
            outputs.append(OutputFile(path, submission, header=[SUBMISSION_HEADER]))
        return outputs


@dataclass
class Classified:
    """One example's prediction: its logits (kept for scoring) and what they say."""

    logits: torch.Tensor  # [num_labels], or a scalar score for regression
    label: str | None = None
    probabilities: dict[str, float] | None = None
    score: float | None = None  # regression


class SequenceClassifier(TaskModule):
    """[CLS] pooled output -> dropout -> linear; cross-entropy, or MSE for regression (STS-B)."""

    main_metric_mode = "max"

    def __init__(self, classifier_dropout: float | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.regression = is_regression(self.hparams.task)
        if not self.regression and not self.label_names:
            raise UserError("a classification task needs its label names (they come from the data module)")
        num_labels = 1 if self.regression else len(self.label_names)
        self.dropout = self.head_dropout(classifier_dropout)
        self.classifier = self.linear_head(num_labels)
        self.metrics = metric_names(self.hparams.task, num_labels)

    @property
    def main_metric(self) -> str:
        return f"val/{self.metrics[0]}"

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.classifier(self.dropout(self.sentence_state(batch)))  # [B, num_labels]
        return logits.squeeze(-1) if self.regression else logits

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.regression:
            return F.mse_loss(logits, labels.float())
        return F.cross_entropy(logits, labels)

    def training_loss(self, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        return self.loss(outputs, batch["labels"])

    def split_outputs(self, outputs: torch.Tensor, batch: dict[str, Any]) -> list[tuple[int, int, Any]]:
        logits = outputs.detach().float().cpu()
        rows = zip(batch["example"].tolist(), batch["feature_index"].tolist(), logits, strict=True)
        return [(example, feature, row) for example, feature, row in rows]

    def decode(self, example: int, outputs: list[torch.Tensor], evaluation: Evaluation) -> Classified | None:
        if not outputs:  # a blank line of a predict text file: nothing was run
            return None
        (logits,) = outputs
        if self.regression:
            return Classified(logits, score=round(float(logits), 6))
        probabilities = logits.softmax(-1)
        return Classified(
            logits,
            label=self.label_names[int(probabilities.argmax())],
            probabilities={name: round(float(v), 6) for name, v in zip(self.label_names, probabilities)},
        )

    def score(self, predictions: dict[int, Classified], evaluation: Evaluation) -> dict[str, float]:
        if evaluation.gold is None:
            return {}
        logits = torch.stack([p.logits for p in predictions.values()])
        labels = torch.tensor([evaluation.gold[i] for i in predictions])
        num_classes = None if self.regression else len(self.label_names)
        values = compute_metrics(self.metrics, logits, labels, num_classes=num_classes)
        values["loss"] = self.loss(logits, labels).item()
        return values
