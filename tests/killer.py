"""A callback that kills its own process with SIGKILL at a given step (for the resume tests)."""

import os
import signal

import lightning as L


class KillAtStep(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, no exception handlers: as a kill -9


class KillInsideWindow(L.Callback):
    """SIGKILL after the first micro-batch of the window that follows optimizer step ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and batch_idx % trainer.accumulate_grad_batches == 0:
            os.kill(os.getpid(), signal.SIGKILL)


class KillDuringSave(L.Callback):
    """SIGKILL in the middle of the checkpoint save that follows optimizer step ``step``: after
    ``fraction`` of the bytes that the previous save of that file held (1.0: all of them are
    written, and the process dies just before the rename)."""

    def __init__(self, step: int, fraction: float):
        self.step, self.fraction = step, fraction

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self.step:
            return
        import tasks.io

        real_open_beside = tasks.io.open_beside
        fraction = self.fraction

        def open_beside(path, mode="w", encoding="utf-8"):
            handle, tmp = real_open_beside(path, mode, encoding)
            previous = os.path.getsize(path) if os.path.exists(path) else 1 << 20
            return _DyingFile(handle, int(previous * fraction), before_rename=fraction >= 1.0), tmp

        tasks.io.open_beside = open_beside  # the ModelCheckpoint callbacks save right after this hook


class _DyingFile:
    def __init__(self, handle, limit: int, before_rename: bool):
        self._handle, self._limit, self._written, self._before_rename = handle, limit, 0, before_rename

    def write(self, data) -> int:
        if not self._before_rename and self._written + len(data) >= self._limit:
            cut = max(0, self._limit - self._written)
            self._handle.write(data[:cut])
            self._handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        self._written += len(data)
        return self._handle.write(data)

    def fileno(self) -> int:  # commit() asks for it to fsync, after the last write, before the rename
        if self._before_rename:
            self._handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return self._handle.fileno()

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()


class KillAtPredictBatch(L.Callback):
    """SIGKILL after predict batch ``batch`` has been written to the temp files."""

    def __init__(self, batch: int):
        self.batch = batch

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == self.batch:
            for callback in trainer.callbacks:
                for _, handle, _ in getattr(callback, "_open", []):
                    handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
