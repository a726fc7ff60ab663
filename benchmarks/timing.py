"""A Lightning callback that times where a ``fit`` spends its wall clock; used by benchmarks/finetune.py.

    python -m tasks fit --config configs/ner.yaml --trainer.callbacks+=benchmarks.timing.StepTimer

(with the project root on PYTHONPATH) writes ``<run dir>/step_times.json`` when the fit ends:

* ``data``: between one training step's end and the next one's start (loader, collation, and the
  Lightning loop's own bookkeeping);
* ``forward``: the step's start up to the loss's backward (forward, loss, ``self.log``);
* ``backward``: the backward pass;
* ``optimizer``: after backward up to the step's end (gradient clipping, AdamW, zero_grad,
  scheduler, logger);
* ``validation`` (and ``sanity_check``): the evaluation loops inside the fit, decoding and metrics
  included;
* ``train_seconds``: training from the first step to the last, validation excluded;

and what the steps saw: ``train_examples`` (rows), ``train_real_tokens`` (attention mask ones),
``train_padded_tokens`` (tensor elements), ``train_sum_squared_lengths`` (what attention costs),
``train_steps``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import lightning as L


class StepTimer(L.Callback):
    def __init__(self) -> None:
        self.seconds = {"data": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}
        self.evaluation = {"validation": 0.0, "sanity_check": 0.0}
        self.counts = dict.fromkeys(
            (
                "train_examples",
                "train_real_tokens",
                "train_padded_tokens",
                "train_sum_squared_lengths",
                "train_steps",
            ),
            0,
        )
        self._mark: float | None = None  # when the current phase started
        self._after_step: float | None = None  # the end of the last step (None: outside a training run)
        self._validation_start = 0.0
        self._train_start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._train_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._after_step = time.perf_counter()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._after_step is not None:
            self.seconds["data"] += now - self._after_step
        self._mark = now
        mask = batch["attention_mask"]
        self.counts["train_examples"] += int(mask.shape[0])
        self.counts["train_real_tokens"] += int(mask.sum())
        self.counts["train_padded_tokens"] += int(mask.numel())
        self.counts["train_sum_squared_lengths"] += int((mask.sum(1) ** 2).sum())  # attention's cost

    def _phase(self, name: str) -> None:
        now = time.perf_counter()
        if self._mark is not None:
            self.seconds[name] += now - self._mark
        self._mark = now

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss) -> None:
        self._phase("forward")

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._phase("backward")

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._phase("optimizer")
        self.counts["train_steps"] += 1
        self._after_step = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        key = "sanity_check" if trainer.sanity_checking else "validation"
        self.evaluation[key] += time.perf_counter() - self._validation_start
        self._after_step = None  # the next epoch's first batch is timed from its epoch start

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loop = time.perf_counter() - self._train_start
        if not trainer.is_global_zero:
            return
        # Validation inside the loop (not the sanity check, which runs before on_train_start).
        record = {
            "train_seconds": loop - self.evaluation["validation"],
            **self.seconds,
            **self.evaluation,
            **self.counts,
        }
        path = Path(trainer.default_root_dir) / "step_times.json"
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(record, indent=1))
        os.replace(temporary, path)
