"""Sequence classification and regression: single sentences and sentence pairs (GLUE and generic files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .data.glue import (
    GLUE_TASKS,
    Example,
    get_task,
    infer_label_names,
    read_glue,
    read_table,
    write_submission,
)
from .data.text import read_text
from .datamodule import TaskDataModule
from .io import UserError, write_jsonl
from .metrics.glue import compute_metrics
from .module import TaskModule

GENERIC_TASKS = ("classification", "regression")
# Column names of the GLUE data sets on the Hugging Face Hub (`--data.dataset nyu-mll/glue`).
HUB_GLUE_COLUMNS = {
    "cola": ("sentence", None), "sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
    "stsb": ("sentence1", "sentence2"), "qqp": ("question1", "question2"), "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
}


def normalise_task(task: str) -> str:
    """``SST-2`` -> ``sst2``; an unknown name is an error listing the known ones."""
    name = str(task).lower().replace("-", "").replace("_", "")
    if name not in GLUE_TASKS and name not in GENERIC_TASKS:
        raise UserError(f"unknown task {task!r}; choose a GLUE task ({', '.join(GLUE_TASKS)}) "
                        f"or one of {', '.join(GENERIC_TASKS)}")
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
        self._task_name = task
        self.text_column, self.text_pair_column = text_column, text_pair_column
        self.label_column, self.index_column, self.header = label_column, index_column, header
        self.labels = list(labels) if labels is not None else None
        self.validation_mismatched_file = validation_mismatched_file
        self._label_names: list[str] | None = None
        self.datasets: dict[str, Any] = {}
        self.examples: dict[str, list[Example]] = {}

    # -- link sources ----------------------------------------------------------------------------

    @property
    def task(self) -> str:
        # Checked here rather than in __init__: an error raised while jsonargparse instantiates
        # the class would reach the user wrapped in parser noise.
        return normalise_task(self._task_name)

    @property
    def _task(self) -> str:
        return self.task

    @property
    def label_names(self) -> list[str] | None:
        """Label names in id order; None for regression."""
        if is_regression(self._task):
            return None
        if self._label_names is None:
            if self.labels is not None:
                self._label_names = list(self.labels)
            elif self._task in GLUE_TASKS:
                self._label_names = list(GLUE_TASKS[self._task].label_names)
            elif self.train_file is not None:
                self._label_names = infer_label_names(self.read("train"))
            elif self.dataset is not None:
                self._label_names = self._hub_label_names()
            else:
                raise UserError("the label set is unknown: give --data.train_file, --data.labels, or a "
                                "checkpoint (--ckpt_path) that stores it")
        return self._label_names

    @property
    def is_pair(self) -> bool:
        if self._task in GLUE_TASKS:
            return GLUE_TASKS[self._task].is_pair
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
        if split == "predict" and Path(path).suffix.lower() == ".txt":
            return read_text(path, pairs=self.is_pair)
        if self._task in GLUE_TASKS:
            return read_glue(path, self._task, require_labels=labelled)
        # Generic files: the train file defines the label set unless --data.labels does.
        inferring = split == "train" and self.labels is None
        known = None if is_regression(self._task) or inferring else self.label_names
        return read_table(path, self.text_column, self.text_pair_column,
                          self.label_column if split != "predict" else None, self.index_column,
                          label_names=known, regression=is_regression(self._task), require_labels=labelled,
                          header=self.header)

    def _examples_from_hub(self, rows) -> list[Example]:
        text_column, pair_column = HUB_GLUE_COLUMNS.get(self._task, (self.text_column, self.text_pair_column))
        names = None if is_regression(self._task) else self.label_names
        examples = []
        for i, row in enumerate(rows):
            label = row.get(self.label_column if self._task not in GLUE_TASKS else "label")
            if label is not None and names is not None and isinstance(label, int):
                label = names[label] if 0 <= label < len(names) else None  # -1 marks unlabelled test rows
            examples.append(Example(index=str(row.get("idx", i)), text=row[text_column],
                                    text_pair=row[pair_column] if pair_column else None, label=label, line=i + 1))
        return examples

    def _hub_label_names(self) -> list[str]:
        feature = self.hub_split("train").features.get(self.label_column)
        return list(feature.names) if hasattr(feature, "names") else infer_label_names(self.read("train"))

    # -- features ------------------------------------------------------------------------------

    def build(self, split: str, path: str | None = None):
        examples = self.read(split, path)
        names = self.label_names
        label_ids = {name: i for i, name in enumerate(names or [])}
        rows = [{"index": e.index, "text": e.text, "text_pair": e.text_pair or "",
                 "label": (float(e.label) if is_regression(self._task) else label_ids[str(e.label)])
                 if e.label is not None else None} for e in examples]
        pair, max_length, tokenizer = self.is_pair, self.max_seq_length, self.tokenizer

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            encoded = tokenizer(batch["text"], batch["text_pair"] if pair else None, truncation="longest_first",
                                max_length=max_length, return_attention_mask=True)
            features = {k: encoded[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
            features["index"] = batch["index"]
            if all(label is not None for label in batch["label"]):
                features["labels"] = batch["label"]
            return features

        settings = {"task": self._task, "pair": pair, "labels": names}
        return self.featurize(f"{split}-{Path(path or self.split_file(split) or 'hub').name}", rows, tokenize, settings)

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.datasets["train"] = self.build("train")
        if stage in ("fit", "validate"):
            if self.validation_file is not None or self.hub_split("validation") is not None:
                self.datasets["validation"] = [self.build("validation")]
                if self.validation_mismatched_file:
                    self.datasets["validation"].append(self.build("validation", self.validation_mismatched_file))
        if stage == "test":
            self.datasets["test"] = self.build("test")
        if stage == "predict":
            self.datasets["predict"] = self.build("predict")

    def train_dataloader(self):
        return self.make_loader(self.datasets["train"], shuffle=True)

    def val_dataloader(self):
        return [self.make_loader(d, shuffle=False) for d in self.datasets.get("validation", [])]

    def test_dataloader(self):
        return self.make_loader(self.datasets["test"], shuffle=False)

    def predict_dataloader(self):
        return self.make_loader(self.datasets["predict"], shuffle=False)

    # -- predictions ---------------------------------------------------------------------------

    def write_predictions(self, outputs: list[list[dict[str, Any]]]) -> list[Path]:
        records = [record for batch in outputs for record in batch]
        paths = [write_jsonl(self.predictions_path(), records)]
        if self._task in GLUE_TASKS:
            spec = get_task(self._task)
            values = [r["score"] if spec.is_regression else r["label"] for r in records]
            submission = paths[0].parent / spec.submission_name(self.predict_file)
            paths.append(write_submission(submission, spec, [r["index"] for r in records], values))
        return paths


class SequenceClassifier(TaskModule):
    """[CLS] pooled output -> dropout -> linear; cross-entropy, or MSE for regression (STS-B)."""

    def __init__(self, classifier_dropout: float | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.regression = is_regression(self.hparams.task)
        if not self.regression and not self.label_names:
            raise UserError("a classification task needs its label names (they come from the data module)")
        num_labels = 1 if self.regression else len(self.label_names)
        dropout = self.encoder.config.hidden_dropout_prob if classifier_dropout is None else classifier_dropout
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.hidden_size, num_labels)
        self.classifier.weight.data.normal_(0.0, self.encoder.config.initializer_range)
        self.classifier.bias.data.zero_()
        self.metrics = metric_names(self.hparams.task, num_labels)
        self._outputs: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    @property
    def main_metric(self) -> str:
        return f"val/{self.metrics[0]}"

    main_metric_mode = "max"

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.classifier(self.dropout(self.encode(batch).pooler_output))  # [B, num_labels]
        return logits.squeeze(-1) if self.regression else logits

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.regression:
            return F.mse_loss(logits, labels.float())
        return F.cross_entropy(logits, labels)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch), batch["labels"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss

    def _eval_step(self, batch: dict[str, Any], dataloader_idx: int) -> None:
        logits = self(batch)
        self._outputs.setdefault(dataloader_idx, []).append((logits.detach().float().cpu(), batch["labels"].cpu()))

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, 0)

    def _log_epoch_metrics(self, prefix: str) -> None:
        for dataloader_idx, outputs in sorted(self._outputs.items()):
            logits = torch.cat([o[0] for o in outputs])
            labels = torch.cat([o[1] for o in outputs])
            logits, labels = self._gather(logits), self._gather(labels)
            suffix = "_mm" if dataloader_idx == 1 else ""  # MNLI mismatched
            values = compute_metrics(self.metrics, logits, labels,
                                     num_classes=None if self.regression else len(self.label_names))
            values["loss"] = self.loss(logits, labels).item()
            for name, value in values.items():
                self.log(f"{prefix}/{name}{suffix}", value, add_dataloader_idx=False, sync_dist=False)
        self._outputs = {}

    def _gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """All ranks' outputs (DDP), so metrics such as F1 and correlations are computed over the whole set."""
        if self.trainer.world_size == 1:
            return tensor
        return self.all_gather(tensor).reshape(-1, *tensor.shape[1:]).cpu()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        logits = self(batch).float()
        if self.regression:
            return [{"index": index, "score": round(float(s), 6)} for index, s in zip(batch["index"], logits)]
        probabilities = logits.softmax(-1)
        return [
            {"index": index, "label": self.label_names[int(p.argmax())],
             "probabilities": {name: round(float(v), 6) for name, v in zip(self.label_names, p)}}
            for index, p in zip(batch["index"], probabilities)
        ]
