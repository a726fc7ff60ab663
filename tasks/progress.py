"""Progress that a log file can hold: when stderr is not a terminal (nohup, SLURM, CI, ``tee``),
one line every ``BERT_TASKS_PROGRESS_EVERY`` seconds (default 30) instead of tqdm's redraws.

    fit: 1,000 steps (3 epochs of 334 batches), a line every 30 s
    epoch 1/3 step 120/1,000 (12%) loss 0.4321 14.2 samples/s ETA 0:10:31
    validation: 200 batches
    validation 40/200 batches
    validation: done in 0:00:41

On a terminal the tqdm bar stays, its training total cut to the batches ``max_steps`` leaves.
"""

from __future__ import annotations

import math
import os
import sys
import time
from datetime import timedelta
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

from .io import UserError

EVERY_VARIABLE = "BERT_TASKS_PROGRESS_EVERY"
DEFAULT_EVERY = 30.0


def progress_callback() -> ProgressBar:
    """The run's progress bar: lines when stderr is not a terminal, else tqdm's bar."""
    if sys.stderr.isatty():
        return StepBoundedBar()
    return ProgressLines(progress_interval())


def progress_interval() -> float:
    """Seconds between progress lines, from ``BERT_TASKS_PROGRESS_EVERY`` (0: every batch)."""
    text = os.environ.get(EVERY_VARIABLE, "").strip()
    if not text:
        return DEFAULT_EVERY
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or math.isinf(seconds):
        raise UserError(f"{EVERY_VARIABLE}={text!r}: expected a number of seconds, 0 or more")
    return seconds


def batches_left_in_epoch(trainer: L.Trainer) -> int | float:
    """This epoch's training batches, cut to those that ``max_steps`` leaves (Lightning's bar only
    cuts them with ``max_epochs -1``: ``--trainer.max_steps 2`` counted to 2/125)."""
    batches = trainer.num_training_batches
    if trainer.max_steps is not None and trainer.max_steps > 0:
        steps_left = max(trainer.max_steps - trainer.global_step, 0)
        batches = min(batches, steps_left * trainer.accumulate_grad_batches)
    return batches


def training_plan(trainer: L.Trainer) -> tuple[int | float, int | float]:
    """(optimizer steps the fit will take, epochs it will run): the fewer of ``max_steps`` and
    ``max_epochs`` x steps per epoch (``limit_train_batches`` and gradient accumulation counted)."""
    total = trainer.estimated_stepping_batches
    steps_per_epoch = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)
    if math.isinf(total) or not steps_per_epoch or math.isinf(steps_per_epoch):
        return total, trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else math.inf
    return total, math.ceil(total / steps_per_epoch)


def duration(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


def count(value: int | float, noun: str | None = None) -> str:
    """``1,000``, or ``1,000 steps`` / ``1 batch`` / ``2 batches`` with a noun; ``?`` when unknown."""
    number = "?" if math.isinf(value) else f"{int(value):,}"
    if noun is None:
        return number
    plural = noun + ("es" if noun.endswith("ch") else "s")
    return f"{number} {noun if value == 1 else plural}"


class StepBoundedBar(TQDMProgressBar):
    """tqdm's bar, whose training total stops where ``max_steps`` stops the epoch."""

    @property
    def total_train_batches(self) -> int | float:
        return batches_left_in_epoch(self.trainer)


class ProgressLines(ProgressBar):
    """A progress line every ``every`` seconds, and one as each stage starts and ends (rank 0 only).

    Fit: epoch, optimizer step of the total (``max_steps`` and ``limit_train_batches`` counted),
    the last training loss, samples per second and the time left at that rate (validations
    excluded). Validation, test and predict: batches done of the stage's total."""

    def __init__(self, every: float = DEFAULT_EVERY) -> None:
        super().__init__()
        self.every = every
        self._enabled = True
        self._last_line = 0.0
        self._stage_started = 0.0
        self._eval_batches = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _print(self, line: str) -> None:
        if self._enabled:
            print(line, file=sys.stderr, flush=True)
            self._last_line = time.monotonic()

    def _due(self) -> bool:
        return time.monotonic() - self._last_line >= self.every

    # -- fit -----------------------------------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._total_steps, self._epochs = training_plan(trainer)
        self._first_step = trainer.global_step  # a resumed fit counts its rate from here
        self._samples = 0
        self._training_seconds = 0.0
        self._resumed_at = time.monotonic()
        self._stage_started = self._resumed_at
        self._print(
            f"fit: {count(self._total_steps, 'step')} ({count(self._epochs, 'epoch')} of "
            f"{count(trainer.num_training_batches, 'batch')}), a line every {self.every:g} s"
        )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._samples += _batch_size(batch)
        if self._due():
            self._print(self._training_line(trainer))

    def _training_line(self, trainer: L.Trainer) -> str:
        step, total = trainer.global_step, self._total_steps
        share = f" ({100 * step / total:.0f}%)" if not math.isinf(total) and total else ""
        epochs = count(self._epochs)
        line = f"epoch {trainer.current_epoch + 1}/{epochs} step {count(step)}/{count(total)}{share}"
        loss = trainer.progress_bar_metrics.get("train/loss")
        if loss is not None:
            line += f" loss {float(loss):.4f}"
        seconds = self._training_seconds + time.monotonic() - self._resumed_at
        if seconds > 0 and self._samples:
            line += f" {self._samples / seconds:.1f} samples/s"
        steps_done = step - self._first_step
        if steps_done > 0 and not math.isinf(total):
            line += f" ETA {duration(seconds / steps_done * max(total - step, 0))}"
        return line

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._print(
            f"fit: done, step {count(trainer.global_step)} in {duration(time.monotonic() - self._stage_started)}"
        )

    # -- validation, test, predict ---------------------------------------------------------------

    def _start_evaluation(self, trainer: L.Trainer, stage: str, batches: Any) -> None:
        if trainer.sanity_checking:
            return
        if trainer.state.fn == "fit":  # the time a validation takes is not the training's rate
            self._training_seconds += time.monotonic() - self._resumed_at
        self._eval_total = sum(batches) if isinstance(batches, list) else batches
        self._eval_batches = 0
        self._eval_started = time.monotonic()
        self._print(f"{stage}: {count(self._eval_total, 'batch')}")

    def _evaluation_batch(self, trainer: L.Trainer, stage: str) -> None:
        if trainer.sanity_checking:
            return
        self._eval_batches += 1
        if self._due():
            self._print(f"{stage} {count(self._eval_batches)}/{count(self._eval_total)} batches")

    def _end_evaluation(self, trainer: L.Trainer, stage: str) -> None:
        if trainer.sanity_checking:
            return
        self._print(f"{stage}: done in {duration(time.monotonic() - self._eval_started)}")
        if trainer.state.fn == "fit":
            self._resumed_at = time.monotonic()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_evaluation(trainer, "validation", trainer.num_val_batches)

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._evaluation_batch(trainer, "validation")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end_evaluation(trainer, "validation")

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_evaluation(trainer, "test", trainer.num_test_batches)

    def on_test_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._evaluation_batch(trainer, "test")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end_evaluation(trainer, "test")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_evaluation(trainer, "predict", trainer.num_predict_batches)

    def on_predict_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._evaluation_batch(trainer, "predict")

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end_evaluation(trainer, "predict")


def _batch_size(batch: Any) -> int:
    ids = batch.get("input_ids") if isinstance(batch, dict) else None
    return len(ids) if ids is not None else 0
