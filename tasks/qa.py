"""Extractive question answering (SQuAD v1.1 and v2.0): the Lightning data module and span head.

The flow, one way: examples (``data.squad``) -> windows ``[CLS] question [SEP] context [SEP]``
with each context token's character span (``features.qa``) -> ``QAModule`` (start and end logits
per token) -> the best valid span per question across its windows (``decoding.qa``) -> the
official metrics and prediction files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info

from .data import squad
from .data.text import LineCursor
from .datamodule import Prepared, TaskDataModule
from .decoding.qa import QAContext, QADecoder, QAPrediction, window_logits
from .evaluation import Evaluation, OutputFile
from .features.qa import QAFeaturizer, example_rows, features_from_table, loader_table, windows_per_example
from .heads import span_logits
from .io import UserError
from .metrics.squad import evaluate
from .module import TaskModule
from .registry import TASKS


class QADataModule(TaskDataModule):
    """SQuAD v1.1/v2.0 JSON or JSONL question files, cut into windows ``[CLS] question [SEP] context [SEP]``.

    Args:
        max_seq_length: window length in tokens, question and special tokens included (384, as BERT).
        max_query_length: questions are cut to this many tokens (64, as run_squad.py); the count of
            cut questions is logged. ``max_seq_length`` must leave room for at least one context token.
        doc_stride: the step, in tokens, between the starts of consecutive windows over a long
            context (google-research/bert's ``doc_stride``). Not an overlap: Hugging Face tokenizers'
            ``stride`` is the overlap between windows, and the same number there gives other windows.
        version_2_with_negative: unanswerable questions exist (SQuAD v2.0): they train towards
            [CLS] and the model may answer "". Default: v2.0 when a data file has unanswerable
            questions (or ``is_impossible``, or a "v2" version); the CLI sets it for a v2.0 checkpoint.
        Other arguments: see ``TaskDataModule``. ``predict`` writes JSONL ``{id, answer, start,
        end, score}`` (character offsets into the context, ``context[start:end] == answer``).
    """

    feature_functions = (QAFeaturizer,)
    stored_settings = ("max_seq_length", "max_query_length", "doc_stride")
    long_inputs = "were split into windows"  # (doc_stride apart)

    def __init__(
        self,
        max_seq_length: int = 384,
        max_query_length: int = 64,
        doc_stride: int = 128,
        version_2_with_negative: bool | None = None,
        **kwargs: Any,
    ):
        super().__init__(max_seq_length=max_seq_length, **kwargs)
        self.max_query_length, self.doc_stride = max_query_length, doc_stride
        QAFeaturizer(self._max_seq_length, max_query_length, doc_stride)  # bad options fail now
        self._files: dict[str, squad.SquadFile] = {}
        # Decided once, here: v2.0 when asked (or the checkpoint says so, through the CLI), or when
        # a labelled file has unanswerable questions. The CLI links the task to the model.
        if version_2_with_negative is None:
            labelled = [split for split in ("train", "validation", "test") if self.has_split(split)]
            version_2_with_negative = any(self.read(split).version_2_with_negative for split in labelled)
        self.version_2_with_negative = version_2_with_negative
        self.task = "squad_v2" if version_2_with_negative else "squad"

    def read(self, split: str) -> squad.SquadFile:
        """The questions of a split, from its file (SQuAD JSON or JSONL) or the hub data set."""
        if split not in self._files:
            path = self.split_file(split)
            if path is not None:
                self._files[split] = squad.read_squad(path)
            elif self.dataset is not None and self.hub_split(split) is not None:
                self._files[split] = squad.squad_from_records(
                    f"{self.dataset}[{split}]", self.hub_split(split)
                )
            else:
                raise UserError(f"no {split} data: set --data.{split}_file")
        return self._files[split]

    def featurizer(self, split: str) -> QAFeaturizer:
        """How the split's questions become windows; only training windows carry labels."""
        sizes = (self.max_seq_length, self.max_query_length, self.doc_stride)
        return QAFeaturizer(*sizes, split == "train", self.version_2_with_negative)

    def build(self, split: str) -> datasets.Dataset:
        """The windows of a split as a ``datasets.Dataset`` (model inputs and post-processing columns)."""
        data = self.read(split)
        if split in ("validation", "test") and not data.has_answers:
            raise UserError(
                f"{data.path}: some questions have no 'answers'; {split} needs gold answers (use predict)"
            )
        featurizer = self.featurizer(split)
        rows, step = list(example_rows(data.examples)), featurizer.batch_step(self.tokenizer, str(data.path))
        name, key = f"{split}-{data.path.name}", featurizer.cache_key()
        table = self.feature_cache.examples(name, rows, step, key, str(data.path))
        rank_zero_info(
            f"{split}: {len(data.examples)} questions -> {len(table)} windows of up to "
            f"{featurizer.max_seq_length} tokens"
        )
        return table

    def prepare(self, split: str) -> list[Prepared]:
        path = self.split_file(split)
        if split == "predict" and path is not None and squad.looks_like_jsonl(path):
            return [self._prepare_stream(path)]
        data, table = self.read(split), self.build(split)
        windows = windows_per_example(table, len(data.examples))
        context = None  # training needs no decoding: its windows' offsets are not read back
        if split != "train":
            features = features_from_table(table)
            context = QAContext(data.examples.__getitem__, windows, lambda first, end: features[first:end])
        evaluation = Evaluation(
            split,
            str(data.path),
            windows,
            gold=[[a.text for a in e.answers or ()] for e in data.examples] if data.has_answers else None,
            context=context,
            outputs=[self._output()] if split == "predict" else (),
            write_artifacts=self._write_evaluation_files if split in ("validation", "test") else None,
        )
        return [Prepared(loader_table(table), evaluation)]

    def _prepare_stream(self, path: str) -> Prepared:
        """A JSONL question file to predict, streamed: read question by question, windows written
        to the cache in chunks; decoding reads each question and its windows back when it needs them."""
        featurizer = self.featurizer("predict")
        table, count = self.feature_cache.stream(
            f"predict-{Path(path).name}",
            path,
            lambda: example_rows(squad.iter_jsonl_questions(path)),
            featurizer.batch_step(self.tokenizer, path),
            featurizer.cache_key(),
        )
        windows = windows_per_example(table, count)
        questions = LineCursor(lambda: squad.iter_jsonl_questions(path))
        context = QAContext(
            questions.get, windows, lambda first, end: features_from_table(table.select(range(first, end)))
        )
        evaluation = Evaluation("predict", path, windows, context=context, outputs=[self._output()])
        return Prepared(loader_table(table), evaluation)

    def _output(self) -> OutputFile:
        return OutputFile(self.predictions_path(), lambda _, prediction: [squad.prediction_line(prediction)])

    def _write_evaluation_files(self, predictions: dict[int, QAPrediction], run_dir: Path) -> list[Path]:
        return squad.write_evaluation_files(predictions.values(), run_dir, self.version_2_with_negative)


class QAModule(TaskModule):
    """Span head: a linear layer on the last hidden states gives a start and an end logit per token.

    Loss: the mean of the start and end cross-entropies (padding masked out). Validation and test
    post-process all windows (see ``postprocess``), log the official SQuAD metrics (``exact_match``
    and ``f1``; v2.0 also ``HasAns_*``, ``NoAns_*``, ``best_exact``, ``best_f1`` and their
    thresholds) and write ``predictions.json`` ({id: answer}, the official format),
    ``nbest_predictions.json`` and, for v2.0, ``null_odds.json`` into the run directory: the
    latest evaluation's.

    Args:
        n_best_size: start and end candidates per window, and the length of the n-best lists.
        max_answer_length: longest answer, in tokens.
        null_score_diff_threshold: SQuAD v2.0: answer "" when null score - best span score exceeds
            this; the ``best_f1_thresh`` a validation reports is the value to use.
    """

    main_metric = TASKS["qa"].main_metric
    example_noun = "questions"
    main_metric_mode = "max"
    uses_pooler = False

    def __init__(
        self,
        n_best_size: int = 20,
        max_answer_length: int = 30,
        null_score_diff_threshold: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.qa_outputs = self.linear_head(2)

    @property
    def version_2_with_negative(self) -> bool:
        return self.hparams.task == "squad_v2"

    def setup(self, stage: str) -> None:
        # Built here, not in __init__: jsonargparse rewraps errors raised while instantiating.
        self.decoder = QADecoder(
            self.hparams.n_best_size,
            self.hparams.max_answer_length,
            self.version_2_with_negative,
            self.hparams.null_score_diff_threshold,
        )
        super().setup(stage)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Start and end logits [B, T]; padding positions get -10000 so they never win or weigh."""
        return span_logits(self.qa_outputs(self.token_states(batch)), batch["attention_mask"])

    def training_loss(
        self, outputs: tuple[torch.Tensor, torch.Tensor], batch: dict[str, Any]
    ) -> torch.Tensor:
        start, end = outputs
        loss = F.cross_entropy(start, batch["start_positions"]) + F.cross_entropy(end, batch["end_positions"])
        return loss / 2

    def split_outputs(
        self, outputs: tuple[torch.Tensor, torch.Tensor], batch: dict[str, Any]
    ) -> list[tuple[int, int, Any]]:
        return window_logits(outputs, batch)

    def decode(
        self, example: int, outputs: Sequence[tuple[np.ndarray, np.ndarray]], evaluation: Evaluation
    ) -> QAPrediction:
        context: QAContext = evaluation.context
        return self.decoder(context.example(example), context.windows_of(example), outputs)

    def score(self, predictions: dict[int, QAPrediction], evaluation: Evaluation) -> dict[str, float]:
        # The questions evaluated only: one cut short (--trainer.limit_val_batches) is left out,
        # not scored 0. A question counts once all of its windows were run (see Collector.complete).
        question = evaluation.context.example
        gold = {question(index).id: evaluation.gold[index] for index in predictions}
        answers = {p.id: p.text for p in predictions.values()}
        odds = {p.id: p.null_odds for p in predictions.values()} if self.version_2_with_negative else None
        # The predictions already say "" where the odds exceed the threshold; scoring with the same
        # threshold keeps the reported EM/F1 those of the written predictions.
        metrics = evaluate(
            gold, answers, self.version_2_with_negative, odds, self.hparams.null_score_diff_threshold
        )
        # One scale across tasks: 0-1 (the official scripts, and score-squad, print 0-100).
        return {
            ("exact_match" if name == "exact" else name): float(value)
            if name.endswith("_thresh")
            else value / 100
            for name, value in metrics.items()
            if not name.endswith("total")
        }
