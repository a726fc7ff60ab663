"""Callbacks every run gets: metrics.json and the resolved config in the run directory."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import SaveConfigCallback

from .io import write_json

METRICS_FILE = "metrics.json"


class MetricsJsonWriter(L.Callback):
    """Writes ``<run dir>/metrics.json``: a flat object of the latest ``val/*`` and ``test/*`` metrics.

    A validation replaces the ``val/`` keys and keeps the ``test/`` ones (and vice versa); a new
    ``fit`` starts the file afresh, so numbers from an earlier run never pass as this run's.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = Path(trainer.default_root_dir) / METRICS_FILE
        if trainer.is_global_zero and path.exists():
            path.unlink()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._write(trainer, "val/")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "test/")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = Path(trainer.default_root_dir) / METRICS_FILE
        if trainer.is_global_zero and path.exists():
            print(f"dev metrics ({path}): {path.read_text().strip()}")

    def _write(self, trainer: L.Trainer, prefix: str) -> None:
        if not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}
        metrics = {k: (None if math.isnan(v) else v) for k, v in sorted(metrics.items())}
        if not metrics:
            return
        path = Path(trainer.default_root_dir) / METRICS_FILE
        previous = json.loads(path.read_text()) if path.exists() else {}
        kept = {k: v for k, v in previous.items() if not k.startswith(prefix)}
        write_json(path, {**kept, **metrics})


class RunConfigSaver(SaveConfigCallback):
    """Saves the resolved config at the top of the run directory (``config.yaml`` for fit,
    ``config.<subcommand>.yaml`` otherwise), overwriting an earlier run's."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.already_saved or not trainer.is_global_zero:
            return
        stage = getattr(stage, "value", stage)  # a TrainerFn enum or its string
        name = "config.yaml" if stage == "fit" else f"config.{stage}.yaml"
        path = Path(trainer.default_root_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        self.parser.save(self.config, str(path), skip_none=False, overwrite=True, multifile=False)
        self.already_saved = True
