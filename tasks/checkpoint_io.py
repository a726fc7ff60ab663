"""How a run's checkpoints reach the disk and come back: Lightning's CheckpointIO, made safe.

Lightning's own saves through a temp file in ``$TMPDIR`` and a move: where the run directory is on
another filesystem (a second disk, NFS, a tmpfs) the move is a copy that truncates the target first,
so a kill during the save destroys the previous ``last.ckpt``. Here the temp file sits beside its
target, is fsynced and renamed (``tasks.io.atomic_open``); reads go through the app's one reader,
``weights_only=True`` whatever the environment says (resuming a fit included).
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from .checkpoint import read_weights, save_checkpoint_file


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        save_checkpoint_file(checkpoint, path)

    def load_checkpoint(
        self, path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict:
        return read_weights(path)
