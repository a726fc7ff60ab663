"""The one prediction writer: every task's ``predict`` output goes through it.

Lightning's ``BasePredictionWriter`` pattern: each predict step returns the examples it finished
(``(example index, prediction)`` pairs, in example order) and the writer renders them at once into
temp files beside the targets. When the epoch ends with every example written, the temp files
are renamed over the targets; otherwise (an error, an interrupted or cut-short run) they are
removed, so a file that exists is complete.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from .evaluation import OutputFile
from .io import UserError, commit, discard, open_beside, remove_stale_temps


class PredictionWriter(BasePredictionWriter):
    def __init__(self) -> None:
        super().__init__(write_interval="batch")
        self._open: list[tuple[OutputFile, IO[str], str]] = []

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._discard()
        if not trainer.is_global_zero:
            return
        for output in pl_module.evaluations["predict"][0].outputs:
            for stale in remove_stale_temps(Path(output.path).parent, Path(output.path).name):
                print(
                    f"note: removed {stale}, the partial file of a predict that was killed", file=sys.stderr
                )
            handle, tmp = open_beside(output.path, "wb" if output.binary else "w")
            _write(handle, output, output.header() if callable(output.header) else output.header)
            self._open.append((output, handle, tmp))

    def write_on_batch_end(
        self, trainer, pl_module, prediction: Any, batch_indices, batch, batch_idx, dataloader_idx
    ):
        for output, handle, _ in self._open:
            for example, value in prediction:
                _write(handle, output, output.render(example, value))

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write_on_batch_end(trainer, pl_module, pl_module.finish_prediction(), None, None, -1, 0)
        pending = pl_module.prediction_pending()
        if pending:
            self._discard()
            source = pl_module.evaluations["predict"][0].source
            raise UserError(
                f"{pending} example(s) of {source} were not predicted (--trainer.limit_predict_batches?); "
                "no predictions written"
            )
        for output, handle, tmp in self._open:
            if output.footer is not None:
                _write(handle, output, output.footer())
            if output.finish is not None:
                output.finish(handle)
            commit(handle, tmp, output.path)  # the command's last line names the files
        self._open = []

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._discard()

    def _discard(self) -> None:
        for _, handle, tmp in self._open:
            discard(handle, tmp)
        self._open = []


def _write(handle: IO, output: OutputFile, chunks) -> None:
    if output.binary:
        handle.writelines(chunks)
    else:
        handle.writelines(line + "\n" for line in chunks)
