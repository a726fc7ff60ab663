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

    A validation replaces the ``val/`` keys and keeps the ``test/`` ones (and vice versa). A ``fit``
    starts the file afresh and writes it only when it ends: numbers from an earlier run never pass
    as this run's, and a run that died leaves no metrics.json to look finished.
    """

    def __init__(self) -> None:
        self._fit_metrics: dict[str, float | None] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = Path(trainer.default_root_dir) / METRICS_FILE
        if trainer.is_global_zero and path.exists():
            path.unlink()
        self._fit_metrics = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.state.fn == "fit":
            self._fit_metrics = _metrics(trainer, "val/")
        else:
            self._write(trainer, "val/", _metrics(trainer, "val/"))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "test/", _metrics(trainer, "test/"))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "val/", self._fit_metrics)
        path = Path(trainer.default_root_dir) / METRICS_FILE
        if trainer.is_global_zero and path.exists():
            print(f"dev metrics ({path}): {path.read_text().strip()}")

    def _write(self, trainer: L.Trainer, prefix: str, metrics: dict[str, float | None]) -> None:
        if not trainer.is_global_zero or not metrics:
            return
        path = Path(trainer.default_root_dir) / METRICS_FILE
        previous = json.loads(path.read_text()) if path.exists() else {}
        kept = {k: v for k, v in previous.items() if not k.startswith(prefix)}
        write_json(path, {**kept, **metrics})


def _metrics(trainer: L.Trainer, prefix: str) -> dict[str, float | None]:
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}
    return {k: (None if math.isnan(v) else v) for k, v in sorted(metrics.items())}


class RunConfigSaver(SaveConfigCallback):
    """Saves the resolved config at the top of the run directory (``config.yaml`` for fit,
    ``config.<subcommand>.yaml`` otherwise), overwriting an earlier run's.

    Saved when the work starts, after every set-up check: a command that stops on a bad option
    leaves nothing behind."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pass

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, "fit")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, "validate")

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, "test")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, "predict")

    def _save(self, trainer: L.Trainer, stage: str) -> None:
        if self.already_saved or not trainer.is_global_zero:
            return
        name = "config.yaml" if stage == "fit" else f"config.{stage}.yaml"
        path = Path(trainer.default_root_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        self.parser.save(self.config, str(path), skip_none=False, overwrite=True, multifile=False)
        self.already_saved = True
