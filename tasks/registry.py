"""The closed set of task kinds: one frozen row each, and how a stored key maps to one.

A checkpoint names its task by a registry key (``checkpoint["bert_tasks"]["task_kind"]``); the app
maps the key to its own classes. Nothing here (or anywhere) imports or calls a dotted path read from a
file: the class paths below are this module's constants, imported lazily so that the CLI's small
commands start without Lightning. Checkpoints written before the key existed carry Lightning's
``_class_path`` hyper-parameter; it is matched against these rows as a plain string and never imported.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

from .io import UserError


@dataclass(frozen=True)
class TaskKind:
    key: str  # what a checkpoint stores
    module: str  # the LightningModule, "package.module.Class"
    data_module: str  # its data module
    hf_architecture: str | None = None  # transformers' class of an HF export (None: not exportable)
    onnx_outputs: tuple[str, ...] = ("logits",)  # the named outputs of an ONNX export
    # What best.ckpt is chosen by (the module's ``main_metric``; classification's depends on the task).
    main_metric: str = "val/loss"
    # The kind whose checkpoint this one's best.ckpt is (a distilled student is its task's model).
    saves_as: str | None = None

    def module_class(self) -> type:
        return _import(self.module)

    def data_module_class(self) -> type:
        return _import(self.data_module)


TASKS: dict[str, TaskKind] = {
    row.key: row
    for row in (
        TaskKind(
            "classification",
            "tasks.classification.SequenceClassifier",
            "tasks.classification.ClassificationDataModule",
            "BertForSequenceClassification",
        ),
        TaskKind(
            "tagging",
            "tasks.tagging.TaggingModule",
            "tasks.tagging.TaggingDataModule",
            "BertForTokenClassification",
            main_metric="val/f1",
        ),
        TaskKind(
            "qa",
            "tasks.qa.QAModule",
            "tasks.qa.QADataModule",
            "BertForQuestionAnswering",
            main_metric="val/f1",
            onnx_outputs=("start_logits", "end_logits"),
        ),
        TaskKind(
            "pretraining",
            "tasks.pretraining.PreTrainingModule",
            "tasks.pretraining.PreTrainingDataModule",
            main_metric="val/mlm_loss",
        ),
        TaskKind("features", "tasks.extraction.FeatureExtractor", "tasks.extraction.FeatureDataModule"),
        TaskKind(
            "distill_classification",
            "tasks.distillation.DistilledClassifier",
            "tasks.classification.ClassificationDataModule",
            saves_as="classification",
        ),
        TaskKind(
            "distill_tagging",
            "tasks.distillation.DistilledTagger",
            "tasks.tagging.TaggingDataModule",
            saves_as="tagging",
        ),
    )
}

_BY_MODULE = {row.module: row for row in TASKS.values()}


def _import(class_path: str) -> type:
    """One of this module's own class paths (never one read from a file)."""
    module_name, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module_name), name)


def kind_of_class(cls: type) -> TaskKind | None:
    """The row of a task module class (a subclass a user wrote finds its nearest registered base)."""
    for klass in cls.__mro__:
        row = _BY_MODULE.get(f"{klass.__module__}.{klass.__qualname__}")
        if row is not None:
            return row
    return None


def kind_of_class_path(class_path: str | None) -> TaskKind | None:
    """The row a config's ``model.class_path`` names, by string (short names accepted), or None."""
    if not class_path:
        return None
    text = str(class_path)
    return _BY_MODULE.get(text) or next(
        (r for r in TASKS.values() if r.module.rsplit(".", 1)[1] == text), None
    )


def class_paths(group: str) -> list[str]:
    """The registry's model (``group`` "model") or data module ("data") class paths."""
    return sorted({row.module if group == "model" else row.data_module for row in TASKS.values()})


def full_class_path(group: str, name: str | None) -> str | None:
    """The registry's class path ``name`` names, in full or by its class name alone (None: none)."""
    return next((p for p in class_paths(group) if name in (p, p.rsplit(".", 1)[1])), None) if name else None


def stored_kind(path: str | os.PathLike, stored: dict[str, Any]) -> TaskKind:
    """The task kind a checkpoint (or ONNX export) names, from ``read_checkpoint``'s answer: its
    registry key, or for an older checkpoint its ``_class_path`` matched as a string."""
    key = stored["payload"].get("task_kind")
    if key is not None:
        if not isinstance(key, str) or key not in TASKS:
            raise UserError(
                f"{path}: names task kind {key!r}, which this app does not have (known: {', '.join(TASKS)})"
            )
        return TASKS[key]
    class_path = stored["hyper_parameters"].get("_class_path")
    row = _BY_MODULE.get(class_path) if isinstance(class_path, str) else None
    if row is None:
        raise UserError(
            f"{path}: does not name one of this app's task kinds"
            + (f" (it names {str(class_path)[:120]!r}, which is never imported)" if class_path else "")
        )
    return row
