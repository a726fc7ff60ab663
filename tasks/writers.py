"""The one prediction writer: every task's ``predict`` output goes through it.

Lightning's ``BasePredictionWriter`` pattern: each predict step returns the examples it finished
(``(example index, prediction)`` pairs, in example order) and the writer renders them at once into
temp files beside the targets (``tasks.record_files``). When the epoch ends with every example
written, the temp files are renamed over the targets; otherwise (an error, an interrupted or
cut-short run) they are removed, so a file that exists is complete.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from .io import UserError
from .record_files import RecordFiles


class PredictionWriter(BasePredictionWriter):
    def __init__(self) -> None:
        super().__init__(write_interval="batch")
        self._files = RecordFiles(())

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._files.discard()
        if not trainer.is_global_zero:
            return
        self._files = RecordFiles(pl_module.evaluations["predict"][0].outputs)
        self._files.start()

    def write_on_batch_end(
        self, trainer, pl_module, prediction: Any, batch_indices, batch, batch_idx, dataloader_idx
    ):
        self._files.write(prediction)

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write_on_batch_end(trainer, pl_module, pl_module.finish_prediction(), None, None, -1, 0)
        pending = pl_module.prediction_pending()
        if pending:
            self._files.discard()
            source = pl_module.evaluations["predict"][0].source
            raise UserError(
                f"{pending} example(s) of {source} were not predicted (--trainer.limit_predict_batches?); "
                "no predictions written"
            )
        self._files.commit()  # the command's last line names the files

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._files.discard()
