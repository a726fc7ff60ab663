"""Callbacks every run gets: metrics.json and the resolved config in the run directory."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, ModelSummary
from lightning.pytorch.cli import SaveConfigCallback

from .io import atomic_open, write_json

METRICS_FILE = "metrics.json"


# Where a fit's evaluation files (SQuAD's predictions.json, confusion matrices) wait, by step,
# until the fit ends and the best checkpoint's are moved into the run directory.
PENDING_ARTIFACTS = ".evaluations"


class MetricsJsonWriter(L.Callback):
    """Writes ``<run dir>/metrics.json``: a flat object of ``val/*`` and ``test/*`` metrics.

    After a ``fit`` it describes ``best.ckpt``: the metrics of the validation that chose it and,
    under ``best_checkpoint``, its path, epoch and step (the evaluation files beside it are that
    validation's too). The file is written when the fit ends: a run that died leaves none to look
    finished, and numbers from an earlier run never pass as this run's. A validate or test run
    writes its own ``metrics.json`` in its ``eval/<name>/`` folder (``tasks.outputs``), never this one.
    """

    def __init__(self) -> None:
        self._validations: list[tuple[int, int, dict[str, float | None]]] = []

    def state_dict(self) -> dict[str, Any]:
        # A resumed fit must know the validations before the kill to tell which one best.ckpt is.
        return {"validations": [list(v) for v in self._validations]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._validations = [tuple(v) for v in state_dict.get("validations", [])]
        self._resumed = True

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = Path(trainer.default_root_dir) / METRICS_FILE
        if trainer.is_global_zero and path.exists():
            path.unlink()
        if not getattr(self, "_resumed", False):
            self._validations = []
        self._resumed = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.state.fn == "fit":
            self._validations.append((trainer.current_epoch, trainer.global_step, _metrics(trainer, "val/")))
        else:
            self._write(trainer, "val/", _metrics(trainer, "val/"))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "test/", _metrics(trainer, "test/"))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        run_dir = Path(trainer.default_root_dir)
        chosen = self._best_validation(trainer)
        if chosen is not None and trainer.is_global_zero:
            epoch, step, metrics, path = chosen
            record = {**metrics, "best_checkpoint": {"path": path, "epoch": epoch, "step": step}}
            stopper = next((c for c in trainer.callbacks if isinstance(c, MainMetricEarlyStopping)), None)
            if stopper is not None and stopper.stop is not None:
                record["stopped_early"] = stopper.stop
            self._write(trainer, "val/", record)
            pending = run_dir / PENDING_ARTIFACTS / str(step)
            for artifact in sorted(pending.glob("*")) if pending.is_dir() else []:
                os.replace(artifact, run_dir / artifact.name)
        if trainer.is_global_zero:
            shutil.rmtree(run_dir / PENDING_ARTIFACTS, ignore_errors=True)
        path = run_dir / METRICS_FILE
        if trainer.is_global_zero and path.exists():
            print(f"dev metrics ({path}): {path.read_text().strip()}")

    def _best_validation(self, trainer: L.Trainer) -> tuple[int, int, dict, str] | None:
        """The validation whose weights best.ckpt holds (the last one without a monitored metric)."""
        if not self._validations:
            return None
        best = next((c for c in trainer.checkpoint_callbacks if c.filename == "best"), None)
        chosen = self._validations[-1]
        if best is not None and best.monitor and best.best_model_score is not None:
            score = float(best.best_model_score)
            matching = [v for v in self._validations if v[2].get(best.monitor) == score]
            chosen = matching[0] if matching else chosen
        path = best.best_model_path if best is not None else ""
        return (*chosen, path)

    def _write(self, trainer: L.Trainer, prefix: str, metrics: dict[str, Any]) -> None:
        if not trainer.is_global_zero or not metrics:
            return
        path = Path(trainer.default_root_dir) / METRICS_FILE
        previous = json.loads(path.read_text()) if path.exists() else {}
        kept = {k: v for k, v in previous.items() if not k.startswith(prefix)}  # best_checkpoint too
        # How many inputs of each split's file were longer than max_seq_length (tasks.datamodule).
        measured = (
            trainer.datamodule.input_lengths() if hasattr(trainer.datamodule, "input_lengths") else None
        )
        write_json(path, {**kept, **metrics, **({"input_lengths": measured} if measured else {})})


def run_callbacks(
    run_dir: Path,
    main_metric: str | None,
    mode: str,
    every_n_steps: int = 0,
    patience: int = 0,
    min_delta: float = 0.0,
) -> list[L.Callback]:
    """What every run of the app gets: best.ckpt (chosen by ``main_metric``; the last weights when
    there is none), last.ckpt (every validation, and every ``every_n_steps`` optimizer steps when
    set: a kill -9 then costs at most that many), metrics.json, the prediction writer and the
    random states a resumed run needs; with ``patience``, early stopping on ``main_metric``."""
    from .writers import PredictionWriter

    def checkpoint(name: str, **options) -> ModelCheckpoint:
        return ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename=name,
            save_top_k=1,
            auto_insert_metric_name=False,
            enable_version_counter=False,
            **options,
        )

    # best.ckpt: weights and what rebuilds the model (config, vocab, labels), no optimizer state;
    # last.ckpt keeps everything a resumed run needs. Not save_last=True: Lightning 2.6 then writes
    # last.ckpt only at steps where best.ckpt is written too, so it would freeze at the best epoch.
    # "step" always grows: saved every time.
    callbacks = [
        checkpoint("best", save_weights_only=True, monitor=main_metric, mode=mode),
        checkpoint("last", monitor="step", mode="max"),
        MetricsJsonWriter(),
        PredictionWriter(),
        ResumableRun(),
    ]
    if every_n_steps > 0:
        callbacks.append(checkpoint("last", monitor="step", mode="max", every_n_train_steps=every_n_steps))
    if patience > 0 and main_metric is not None:
        callbacks.append(MainMetricEarlyStopping(main_metric, min_delta, patience, mode))
    return callbacks


class MainMetricEarlyStopping(EarlyStopping):
    """Lightning's early stopping on the task's main metric, checked after every validation (also
    those within an epoch), that remembers the step of the best validation and says why it stopped:
    ``stop`` is metrics.json's ``stopped_early`` (None while the run goes on). Its state (the
    validations waited, the best score and step, the stop) is in last.ckpt: a resumed run counts on."""

    def __init__(self, monitor: str, min_delta: float, patience: int, mode: str) -> None:
        super().__init__(monitor, min_delta, patience, mode=mode, check_on_train_epoch_end=False)
        self.best_step: int | None = None
        self.stop: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_step": self.best_step, "stop": self.stop}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.best_step, self.stop = state_dict.get("best_step"), state_dict.get("stop")

    def _run_early_stopping_check(self, trainer: L.Trainer) -> None:
        self._at = (trainer.current_epoch, trainer.global_step)  # where the criteria are evaluated
        before = self.stop
        super()._run_early_stopping_check(trainer)
        if self.stop is not None and self.stop is not before and trainer.is_global_zero:
            epoch, step = self._at
            print(f"early stopping at epoch {epoch}, step {step}: {self.stop['reason']}", file=sys.stderr)

    def _evaluate_stopping_criteria(self, current: torch.Tensor) -> tuple[bool, str | None]:
        should_stop, reason = super()._evaluate_stopping_criteria(current)
        epoch, step = self._at
        if not should_stop and self.wait_count == 0:  # a new best
            self.best_step = step
        self.stop = None  # a resumed run that goes on past an earlier stop has not stopped (yet)
        if should_stop:
            best = f"best {float(self.best_score):.4g} at step {self.best_step}"
            if torch.isfinite(current):
                why = (
                    f"{self.monitor} did not improve by more than {abs(self.min_delta):g} "
                    f"for {self.wait_count} validations ({best})"
                )
            else:
                why = f"{self.monitor} is {float(current)}, not finite ({best})"
            self.stop = {"epoch": epoch, "step": step, "reason": why}
        return should_stop, reason


class SummaryWithoutFlops(ModelSummary):
    """Lightning's model summary without its FLOPs column and "Total FLOPs" line: they count only
    when the module has an ``example_input_array``, so here they always read 0."""

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                  total_flops, **summarize_kwargs) -> None:  # fmt: skip
        from lightning.pytorch.callbacks.model_summary import log
        from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = _format_summary_table(
            total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, *columns
        )
        lines = [line for line in table.splitlines() if not line.endswith("Total Flops")]
        log.info("\n" + "\n".join(lines))


def _metrics(trainer: L.Trainer, prefix: str) -> dict[str, float | None]:
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}
    # counts (evaluated_examples, total_examples) stay whole numbers
    return {
        k: None if math.isnan(v) else int(v) if "_examples" in k else v for k, v in sorted(metrics.items())
    }


class ResumableRun(L.Callback):
    """What Lightning does not keep in a checkpoint but an identical resumed run needs: the random
    states (dropout draws from them) and where in its epoch the run was (the sampler skips the
    batches already trained)."""

    def state_dict(self) -> dict[str, Any]:
        kind, keys, position, has_gauss, gauss = np.random.get_state()
        # Plain tensors and numbers only: checkpoints are read with weights_only=True.
        numpy_state = {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}  # fmt: skip
        states = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
        if torch.cuda.is_available():
            states["cuda"] = torch.cuda.get_rng_state_all()
        return states

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._states = state_dict

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress", {})
        # "processed": a checkpoint saved at the end of a batch counts that batch there ("completed"
        # is only incremented after the save).
        done = progress.get("current", {}).get("processed", 0)
        if trainer.datamodule is not None and done and not progress.get("is_last_batch", False):
            trainer.datamodule.resume_training_at(checkpoint["epoch"], done)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        states = getattr(self, "_states", None)
        if states is None:
            return
        torch.set_rng_state(states["torch"])
        numpy_state = states["numpy"]
        keys = numpy_state["keys"].numpy().astype(np.uint32)
        np.random.set_state(
            ("MT19937", keys, numpy_state["position"], numpy_state["has_gauss"], numpy_state["gauss"])
        )
        random.setstate(states["python"])
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])
        self._states = None


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
        text = self.parser.dump(self.config, skip_none=False)
        with atomic_open(path) as handle:
            handle.write(text)
        self.already_saved = True
