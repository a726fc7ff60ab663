"""A callback that saves each process's weights when fit ends (``rank<N>.pt`` in ``directory``):
the DDP tests compare the ranks' copies. Apart from conftest, which a ``python -m tasks``
subprocess must not import (it sets the datasets cache before datasets is imported)."""

from pathlib import Path

import lightning as L
import torch


class SaveRankWeights(L.Callback):
    def __init__(self, directory: str):
        self.directory = Path(directory)

    def on_fit_end(self, trainer, pl_module) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        torch.save(pl_module.state_dict(), self.directory / f"rank{trainer.global_rank}.pt")
