"""Sequence classification and regression: single sentences and sentence pairs (GLUE and generic files)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .class_weights import fill_balanced, weights_buffer
from .data.classification_inputs import iter_predict_file
from .data.classification_outputs import confusion_matrix_writer, prediction_files
from .data.glue import GLUE_TASKS, hub_examples, iter_glue
from .data.tables import Example, infer_label_names, iter_table
from .data.text import LineCursor
from .datamodule import Prepared, TaskDataModule
from .decoding.classification import Classified, classify, split_logits
from .evaluation import Evaluation, OutputFile
from .features.classification import SentenceFeatures, is_multilabel, is_regression, normalise_task
from .io import UserError
from .metrics.glue import compute_metrics
from .metrics.multilabel import DEFAULT_THRESHOLD, best_thresholds, multilabel_metrics
from .module import TaskModule


def metric_names(task: str | None, num_labels: int) -> tuple[str, ...]:
    """GLUE's metrics for a GLUE task; accuracy (+ F1 of label 1 when binary) or correlations otherwise."""
    if task in GLUE_TASKS:
        return GLUE_TASKS[task].metrics
    if is_regression(task):
        return ("pearson", "spearman")
    if is_multilabel(task):  # and per label: precision/<label>, recall/<label>, f1/<label>
        return ("f1_micro", "f1_macro", "exact_match")
    return ("accuracy", "f1") if num_labels == 2 else ("accuracy",)


class ClassificationDataModule(TaskDataModule):
    """GLUE TSVs (``task`` = cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli) or generic CSV/TSV/JSONL.

    Args:
        task: a GLUE task name, or ``classification`` / ``regression`` / ``multilabel`` for generic files.
        text_column, text_pair_column, label_column, index_column: generic files' columns (names,
            or 0-based positions with ``header: false``); GLUE tasks know theirs.
        label_separator: multilabel's CSV/TSV label field: the names joined by this (JSONL: a list).
            An empty field or list is an example with no labels.
        labels: the label set in id order (default: GLUE's, or the sorted labels of the train file).
        validation_mismatched_file: MNLI's dev_mismatched.tsv, scored as ``val/accuracy_mm``.
        header: whether generic CSV/TSV files start with a header row.
    """

    # A generic table's columns too: the checkpoint alone validates and predicts on files laid out
    # as its train file was (a command-line --data.* option still overrides).
    stored_settings = (
        "max_seq_length",
        "text_column",
        "text_pair_column",
        "label_column",
        "index_column",
        "header",
        "label_separator",
    )

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
        label_separator: str = ",",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if not label_separator:
            raise UserError("--data.label_separator must not be empty")
        self.label_separator = label_separator
        self.text_column, self.text_pair_column = text_column, text_pair_column
        self.label_column, self.index_column, self.header = label_column, index_column, header
        self.labels = list(labels) if labels is not None else None
        self.validation_mismatched_file = validation_mismatched_file
        self.examples: dict[str, list[Example]] = {}
        # Decided once, here: the CLI links both to the model right after instantiation.
        self.task = normalise_task(task)
        glue = GLUE_TASKS.get(self.task)
        self.is_pair = glue.is_pair if glue is not None else text_pair_column is not None
        self.label_names = self._decide_label_names()
        # Checked now, at the requested length (the encoder's is known once its tokenizer is loaded).
        self._features = SentenceFeatures(self.task, self.label_names, self.is_pair, self._max_seq_length)

    def _decide_label_names(self) -> list[str] | None:
        """Label names in id order; None for regression."""
        if is_regression(self.task):
            return None
        if self.labels is not None:
            return list(self.labels)
        if self.task in GLUE_TASKS:
            return list(GLUE_TASKS[self.task].label_names)
        if self.train_file is not None or self.dataset is not None:  # a hub data set may name its labels
            hub = None if self.train_file is not None else self.hub_split("train")
            names = getattr(hub.features.get(self.label_column), "names", None) if hub is not None else None
            return list(names) if names else infer_label_names(self.read("train"))
        raise UserError(
            "the label set is unknown: give --data.train_file, --data.labels, or a "
            "checkpoint (--ckpt_path) that stores it"
        )

    @property
    def features(self) -> SentenceFeatures:
        """The featurisation of this run, its length capped at the encoder's (fields: the cache key)."""
        return replace(self._features, max_seq_length=self.max_seq_length)

    # -- reading -------------------------------------------------------------------------------

    def read(self, split: str, path: str | None = None) -> list[Example]:
        """Examples of a split, from its local file or the hub data set (kept once read)."""
        path = path or self.split_file(split)
        key = f"{split}:{path}"
        if key in self.examples:
            return self.examples[key]
        if path is not None:
            examples = [example for example in self._iter_examples(split, path) if example is not None]
        elif (rows := self.hub_split(split)) is not None:
            columns = (self.text_column, self.text_pair_column, self.label_column)
            examples = hub_examples(rows, self.task, *columns, self.label_names)
        else:
            raise UserError(f"no {split} data: set --data.{split}_file")
        self.examples[key] = examples
        return examples

    def _iter_examples(self, split: str, path: str) -> Iterator[Example | None]:
        """A file's examples in order, read as they are asked for (a predict file may be huge); a
        predict text file gives one item per line (None: a blank line)."""
        if split == "predict":
            return iter_predict_file(
                path, self.task, self.is_pair, self.text_column, self.text_pair_column, self.index_column,
                self.header, self.label_names, self.label_separator,
            )  # fmt: skip
        labelled = split in ("train", "validation")
        if self.task in GLUE_TASKS:
            return iter_glue(path, self.task, require_labels=labelled)
        # Generic files: the train file defines the label set unless --data.labels does.
        known = None if split == "train" and self.labels is None else self.label_names
        label_column = self.label_column if split != "predict" else None
        columns = (self.text_column, self.text_pair_column, label_column, self.index_column)
        separator = self.label_separator if is_multilabel(self.task) else None
        return iter_table(
            path, *columns, known, is_regression(self.task), labelled, self.header, label_separator=separator
        )

    def train_label_counts(self) -> tuple[list[int], int]:
        """How many training examples carry each label (in id order), and how many there are: what
        ``--model.class_weights balanced`` is computed from."""
        gold = [self._features.gold(example) for example in self.read("train")]
        counts = [0] * len(self.label_names or [])
        for label in gold:
            for index in (i for i, on in enumerate(label) if on) if isinstance(label, list) else (label,):
                counts[index] += 1
        return counts, len(gold)

    # The predict file's reading shapes its streamed features: this module is in their cache key.
    feature_functions = (_iter_examples, SentenceFeatures.tokenizing)

    # -- features and evaluations -------------------------------------------------------------

    def build(self, split: str, path: str | None = None):
        """The features of a split and its number of examples (a predict file: read as it goes)."""
        features, name = self.features, f"{split}-{Path(path or self.split_file(split) or 'hub').name}"
        tokenize, key = features.tokenizing(self.tokenizer), features.cache_key()
        if split == "predict" and path is not None:

            def rows() -> Iterator[dict[str, Any] | None]:
                for example in self._iter_examples(split, path):
                    yield None if example is None else features.row(example)

            return self.feature_cache.stream(name, path, rows, tokenize, key)
        examples = self.read(split, path)
        source = str(path or self.split_file(split) or f"{self.dataset}[{split}]")  # as its Evaluation says
        return self.feature_cache.examples(name, features.rows(examples), tokenize, key, source), len(
            examples
        )

    def prepare(self, split: str) -> list[Prepared]:
        if split == "predict" and self.predict_file is not None:
            return [self._prepare_stream(self.predict_file)]
        paths = {"": self.split_file(split)}
        if split == "validation" and self.validation_mismatched_file:
            paths["_mm"] = self.validation_mismatched_file  # MNLI: matched, then mismatched
        prepared = []
        for suffix, path in paths.items():
            examples = self.read(split, path)
            gold = [self._features.gold(example) for example in examples]
            gold = gold if None not in gold else None  # None: an unlabelled (test) file
            source = str(path or f"{self.dataset}[{split}]")
            evaluation = Evaluation(split, source, [1] * len(examples), gold, examples, suffix)
            if split == "predict":
                evaluation.outputs = self._outputs(lambda examples=examples: examples.__getitem__)
            elif self.label_names and gold is not None and not is_multilabel(self.task):
                evaluation.write_artifacts = confusion_matrix_writer(
                    self.task, gold, self.label_names, suffix
                )
            prepared.append(Prepared(self.build(split, path)[0], evaluation))
        return prepared

    def _prepare_stream(self, path: str) -> Prepared:
        """A predict file in memory that does not grow with it: features memory-mapped from the cache,
        a byte per line (1: a text, 0: a blank line), records that read the file again as they come."""
        features, num_lines = self.build("predict", path)
        windows = np.zeros(num_lines, dtype=np.int8)
        if len(features):
            windows[features.data.column("example").to_numpy()] = 1
        cursor = lambda: LineCursor(lambda: self._iter_examples("predict", path)).get  # noqa: E731
        return Prepared(features, Evaluation("predict", str(path), windows, outputs=self._outputs(cursor)))

    def _outputs(self, lookup: Callable[[], Callable[[int], Example | None]]) -> list[OutputFile]:
        # GLUE's submission file comes with the default predict folder, not beside a file of the user's.
        submission = self.predictions_file is None
        return prediction_files(self.predictions_path(), self.task, self.predict_file, lookup, submission)


class SequenceClassifier(TaskModule):
    """[CLS] pooled output -> dropout -> linear; cross-entropy, MSE for regression (STS-B), or a
    sigmoid per label with binary cross-entropy for multi-label.

    Multi-label's per-label thresholds (the ``thresholds`` buffer, so the checkpoint carries them)
    are chosen at each validation of a fit, each maximising its label's F1 on the validation set;
    validate, test and predict use the stored ones.

    Args:
        classifier_dropout: dropout before the head (default: the encoder's hidden dropout).
        class_weights: ``balanced`` (from the train file's label counts) or one weight per label, for
            the loss (multi-label: BCE's ``pos_weight``); see ``tasks.class_weights``. Stored in the
            checkpoint.
        tune_threshold: binary tasks: predict label 1 (the second label) when its probability reaches a threshold
            chosen at each validation to maximise the main metric (stored in the checkpoint).
            Multi-label tunes its per-label thresholds unless this is ``false`` (then 0.5).
        threshold_metric: the metric the binary threshold maximises instead of the main one, e.g.
            ``f1`` (label 1's F1) when label 1 is a rare class whose F1 matters more than accuracy.
    """

    main_metric_mode = "max"

    def __init__(
        self,
        classifier_dropout: float | None = None,
        class_weights: str | list[float] | None = None,
        tune_threshold: bool | None = None,
        threshold_metric: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.regression = is_regression(self.hparams.task)
        self.multilabel = is_multilabel(self.hparams.task)
        if not self.regression and not self.label_names:
            raise UserError("a classification task needs its label names (they come from the data module)")
        num_labels = 1 if self.regression else len(self.label_names)
        self.dropout = self.head_dropout(classifier_dropout)
        self.classifier = self.linear_head(num_labels)
        self.metrics = metric_names(self.hparams.task, num_labels)
        if self.multilabel:
            self.register_buffer("thresholds", torch.full((num_labels,), DEFAULT_THRESHOLD))
        self.binary_threshold = bool(tune_threshold) and not self.multilabel
        if self.binary_threshold:
            if num_labels != 2 or self.regression:
                raise UserError(
                    f"--model.tune_threshold applies to binary and multi-label tasks, not to "
                    f"{self.hparams.task!r} with {num_labels} label(s)"
                )
            self.register_buffer("threshold", torch.tensor(DEFAULT_THRESHOLD))
        if threshold_metric is not None and (
            not self.binary_threshold or threshold_metric not in self.metrics
        ):
            raise UserError(
                f"--model.threshold_metric needs --model.tune_threshold true on a binary task and one of "
                f"its metrics ({', '.join(self.metrics)}), not {threshold_metric!r}"
            )
        self.threshold_metric = threshold_metric or self.metrics[0]
        what = "regression" if self.regression else ""
        self.register_buffer("class_weights", weights_buffer(class_weights, num_labels, what))

    def setup(self, stage: str) -> None:
        super().setup(stage)
        fill_balanced(self, stage, self.multilabel)

    @property
    def main_metric(self) -> str:
        return f"val/{self.metrics[0]}"

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.classifier(self.dropout(self.sentence_state(batch)))  # [B, num_labels]
        return logits.squeeze(-1) if self.regression else logits

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.regression:
            return F.mse_loss(logits, labels.float())
        if self.multilabel:
            # The collate pads list columns to a multiple of 8: the first num_labels are the labels.
            targets = labels[:, : logits.shape[-1]].to(logits.dtype)
            return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=self.class_weights)
        return F.cross_entropy(logits, labels, weight=self.class_weights)

    def training_loss(self, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        return self.loss(outputs, batch["labels"])

    def split_outputs(self, outputs: torch.Tensor, batch: dict[str, Any]) -> list[tuple[int, int, Any]]:
        return split_logits(outputs, batch)

    def decode(self, example: int, outputs: list[torch.Tensor], evaluation: Evaluation) -> Classified | None:
        if not outputs:  # a blank line of a predict text file: nothing was run
            return None
        (logits,) = outputs
        return classify(logits, self.label_names, self.regression, *self.decision_thresholds())

    def decision_thresholds(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Multi-label's per-label thresholds and a binary task's tuned one (None: not used)."""
        thresholds = self.thresholds.cpu() if self.multilabel else None
        return thresholds, self.threshold.cpu() if self.binary_threshold else None

    def score(self, predictions: dict[int, Classified], evaluation: Evaluation) -> dict[str, float]:
        if evaluation.gold is None:
            return {}
        logits = torch.stack([p.logits for p in predictions.values()])
        labels = torch.tensor([evaluation.gold[i] for i in predictions])
        if self.multilabel:
            return self._score_multilabel(logits, labels, evaluation)
        num_classes = None if self.regression else len(self.label_names)
        if self.binary_threshold:
            return self._score_binary(logits, labels, evaluation)
        values = compute_metrics(self.metrics, logits, labels, num_classes=num_classes)
        values["loss"] = self.loss(logits, labels).item()
        return values

    def _score_multilabel(
        self, logits: torch.Tensor, labels: torch.Tensor, evaluation: Evaluation
    ) -> dict[str, float]:
        """The multi-label metrics at the stored thresholds; a fit's validation first sets them to
        the ones that maximise each label's F1 here (so best.ckpt carries its validation's)."""
        probabilities = logits.sigmoid()
        if self._tuning(evaluation) and self.hparams.get("tune_threshold") is not False:
            self.thresholds.copy_(best_thresholds(probabilities, labels))
        values = multilabel_metrics(probabilities, labels, self.thresholds.cpu(), self.label_names)
        values.update({f"threshold/{n}": float(t) for n, t in zip(self.label_names, self.thresholds)})
        values["loss"] = self.loss(logits, labels).item()
        return values

    def _tuning(self, evaluation: Evaluation) -> bool:
        """Whether this evaluation chooses the stored thresholds: a fit's validation (not the sanity check)."""
        return (
            self.trainer.state.fn == "fit"
            and not self.trainer.sanity_checking
            and evaluation.split == "validation"
            and not evaluation.metric_suffix
        )

    def _score_binary(
        self, logits: torch.Tensor, labels: torch.Tensor, evaluation: Evaluation
    ) -> dict[str, float]:
        """The metrics with label 1 predicted at the stored threshold; a fit's validation first sets
        it to the candidate (a midpoint between two probabilities, or 0.5) with the best main metric."""
        positive = logits.softmax(-1)[:, 1]

        def metrics_at(threshold: float) -> dict[str, float]:
            return compute_metrics(self.metrics, (positive >= threshold).long(), labels, num_classes=2)

        if self._tuning(evaluation):
            ordered = positive.double().unique()  # ascending
            midpoints = (ordered[1:] + ordered[:-1]) / 2
            step = max(1, len(midpoints) // 256)  # a few hundred cuts are enough; each is scored
            candidates = [DEFAULT_THRESHOLD, *midpoints[::step].tolist()]
            target = self.threshold_metric
            scored = [(metrics_at(t)[target], -abs(t - DEFAULT_THRESHOLD), t) for t in candidates]
            self.threshold.fill_(max(scored)[2])
        values = metrics_at(float(self.threshold))
        values["threshold"] = float(self.threshold)
        values["loss"] = self.loss(logits, labels).item()
        return values
