"""The Lightning application: LightningCLI over the task modules, with the run-directory conventions."""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO

from . import registry
from .callbacks import RunConfigSaver, SummaryWithoutFlops, run_callbacks
from .checkpoint import read_weights
from .checkpoint_io import AtomicCheckpointIO
from .datamodule import TaskDataModule
from .io import UserError
from .module import TaskModule
from .options import COMMAND_OPTIONS, LINKED_OPTIONS, TRAINER_DEFAULTS
from .outputs import CKPT_SHORTHANDS, EVALUATION_FOLDERS, default_run, evaluation_folder, now, summary_line
from .preflight import explicit_options
from .progress import progress_callback
from .rundir import busy_run_error, lock_run_directory, run_files
from .source import Source


class BertTasksCLI(LightningCLI):
    """``python -m tasks fit|validate|test|predict --config configs/X.yaml [--key value ...]``."""

    def __init__(self, args: list[str] | None = None, run: bool = True):
        self._explicit = explicit_options(sys.argv[1:] if args is None else args)
        super().__init__(
            TaskModule,
            TaskDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=RunConfigSaver,
            auto_configure_optimizers=False,
            # Parse errors are raised (and shortened by tasks.cli) instead of printing pages of usage.
            parser_kwargs={
                "exit_on_error": False,
                **{c: {"exit_on_error": False} for c in self.subcommands()},
            },
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser) -> None:
        for source, target, apply_on in LINKED_OPTIONS:
            parser.link_arguments(source, target, apply_on=apply_on)
        parser.set_defaults({f"trainer.{name}": value for name, value in TRAINER_DEFAULTS.items()})
        for name, (type_, default, text) in COMMAND_OPTIONS.items():
            parser.add_argument(f"--{name}", type=type_, default=default, help=text)

    # Whether this command holds its run directory's lock while it runs (a command that only
    # builds the model and data, as prune does, writes nothing there).
    locks_run_directory = True

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        if self.datamodule is not None:
            # The model opened its source; the data module tokenises with what it read, not a second read.
            self.datamodule.use_tokenizer(self.model.tokenizer(self.datamodule.do_lower_case))
        strategy = self.trainer.strategy
        if type(getattr(strategy, "_checkpoint_io", None)) in (type(None), TorchCheckpointIO):
            # Saves written beside their target and renamed; every read weights_only (resume included).
            strategy.checkpoint_io = AtomicCheckpointIO()

    def _instantiate_trainer(self, config: dict, callbacks: list) -> L.Trainer:
        """The trainer, with the run conventions' callbacks (checkpoints, metrics.json, the
        prediction writer, resumable random states) after the user's."""
        subcommand = self.config[self.subcommand] if self.subcommand else self.config
        every = subcommand.get("checkpoint_every_n_steps") or 0
        if every < 0:
            raise UserError(f"--checkpoint_every_n_steps must be at least 0, not {every}")
        has_validation = self.datamodule is not None and self.datamodule.has_split("validation")
        patience, min_delta = early_stopping_options(subcommand, has_validation)
        run_dir = Path(config.get("default_root_dir") or ".")
        monitor = self.model.main_metric if has_validation else None
        extra = run_callbacks(run_dir, monitor, self.model.main_metric_mode, every, patience, min_delta)
        given = [*callbacks, *(config.get("callbacks") or [])]
        if config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in given
        ):
            extra.append(progress_callback())  # lines in a log file, tqdm's bar on a terminal
        if config.get("enable_model_summary") is not False:  # ours in place of Lightning's default
            config = {**config, "enable_model_summary": False}
            extra.append(SummaryWithoutFlops())
        return super()._instantiate_trainer(config, [*callbacks, *extra])

    def _parse_ckpt_path(self) -> None:
        """A task checkpoint's stored settings fill in the model's options, but an option given on
        the command line wins (with a note when it differs). Lightning's own version lets the
        checkpoint silently override everything, and opens the file before we can check it."""
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        ckpt_path = config.get("ckpt_path") if config is not None else None
        if not ckpt_path or ckpt_path in CKPT_SHORTHANDS:
            return
        checkpoint = Source(ckpt_path).stored()  # a clear UserError for a bad file
        check_same_task(ckpt_path, checkpoint, config)
        stored = checkpoint["hyper_parameters"]
        settings = {
            k: v
            for k, v in stored.items()
            if not k.startswith("_") and k not in LINKED and k not in INFERENCE_OPTIONS
        }
        self._fill_from_checkpoint("model", config.model.init_args, settings)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if torch.cuda.is_available():
            torch.set_float32_matmul_precision("high")  # TF32 for fp32 matmuls on Ampere and later
        if self.subcommand == "predict" and config.get("return_predictions") is None:
            config.return_predictions = False  # the PredictionWriter streams every record: keep none
        trainer = config.trainer
        evaluating = self.subcommand in ("validate", "test", "predict")
        if trainer.default_root_dir is None:
            run = default_run(
                self.subcommand, config.get("ckpt_path"), config.get("config") or [], config.model.class_path
            )
            trainer.default_root_dir = str(run)
        self.run_dir = Path(trainer.default_root_dir)
        # An explicit predictions file is all that predict writes: no folder, config or logs.
        writes_folder = not (self.subcommand == "predict" and config.data.init_args.get("predictions_file"))
        if evaluating:
            # A run directory belongs to one model: evaluations go into folders of their own.
            data_args = config.data.init_args if config.data is not None else None
            model_args, ckpt_path = config.model.init_args, config.get("ckpt_path")
            folder = evaluation_folder(self.subcommand, data_args, model_args, self._explicit, ckpt_path)
            trainer.default_root_dir = str(self.run_dir / folder)
        if not writes_folder:
            self.save_config_callback = None
        if self.subcommand and self.locks_run_directory and writes_folder:
            # One run per directory: a second command writing into it refuses, naming this one.
            lock_run_directory(trainer.default_root_dir, self.subcommand)
        if self.subcommand == "fit":
            _refuse_inference_options(config)
            _claim_run_directory(config, Path(trainer.default_root_dir))
        elif self.subcommand in ("validate", "test", "predict") and not config.get("ckpt_path"):
            if not Source(config.model.init_args.pretrained).is_task_model and not getattr(
                _model_class(config), "runs_without_fine_tuning", False
            ):
                raise UserError(
                    f"{self.subcommand} needs a fine-tuned model: pass --ckpt_path "
                    f"{self.run_dir / 'checkpoints' / 'best.ckpt'} (or another fit's checkpoint)"
                )
        if self.subcommand == "predict" and trainer.logger is None:
            trainer.logger = False  # predict logs no metrics: no empty logs folder
        if trainer.logger is None or trainer.logger is True:
            # One log directory per command (logs/csv/fit, logs/csv/validate, ...), not a new
            # version_N for every evaluation; a command run again replaces its own logs.
            version = self.subcommand or "run"
            trainer.logger = [
                {
                    "class_path": "lightning.pytorch.loggers.CSVLogger",
                    "init_args": {
                        "save_dir": trainer.default_root_dir,
                        "name": "logs/csv",
                        "version": version,
                    },
                },
                {
                    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                    "init_args": {
                        "save_dir": trainer.default_root_dir,
                        "name": "logs/tensorboard",
                        "version": version,
                    },
                },
            ]
        model_args = config.model.init_args
        if model_args.get("pretrained") is None and model_args.get("teacher"):
            # A distillation student starts from its teacher's layers: the teacher's tokenizer.
            config.data.init_args.tokenizer = model_args.teacher
        data = config.data.init_args if config.data is not None else {}
        for name in SHARED_OPTIONS:
            if name in config.model.init_args and name in data:
                data[name] = config.model.init_args[name]
        ckpt_path = config.get("ckpt_path")
        if ckpt_path and self.subcommand != "fit" and ckpt_path not in CKPT_SHORTHANDS:
            # A .ckpt alone is enough: the encoder is rebuilt from the config stored in it (weights
            # come with Lightning's loading), the tokenizer and the labels from what it carries.
            config.model.init_args.pretrained = ckpt_path
            config.data.init_args.tokenizer = ckpt_path
            source = Source(ckpt_path)
            stored = source.stored()
            self._pass_down(config, stored["hyper_parameters"], labels=True)
            self._restore_data_settings(config, stored["data_settings"])
            if source.kind == Source.ONNX:
                config.ckpt_path = None  # its weights are in model.onnx, which the module opens itself
        elif (pretrained := Source(config.model.init_args.pretrained)).is_task_model:
            self._pass_down(config, pretrained.stored()["hyper_parameters"])

    def _run_subcommand(self, subcommand: str) -> None:
        """The command, then (after a completed one) the one line saying where its files went."""
        started = now()
        super()._run_subcommand(subcommand)
        trainer = self.trainer
        if not trainer.is_global_zero or trainer.interrupted:
            return
        folder = Path(trainer.default_root_dir)
        if subcommand == "fit" and not self.config.fit.get("keep_last_ckpt", True):
            last = folder / "checkpoints" / "last.ckpt"
            if last.is_file():
                last.unlink()
                print(
                    f"note: removed {last} (--keep_last_ckpt false): this run cannot be resumed",
                    file=sys.stderr,
                )
        predictions = []
        if subcommand == "predict":
            predictions = [
                Path(o.path) for p in self.datamodule.prepared["predict"] for o in p.evaluation.outputs
            ]
        print(summary_line(subcommand, folder, started, predictions), file=sys.stderr)

    def _restore_data_settings(self, config, settings: dict) -> None:
        """The run's featurisation (max_seq_length, doc_stride, tag scheme, ...) from its checkpoint."""
        self._fill_from_checkpoint("data", config.data.init_args, settings)

    def _fill_from_checkpoint(self, group: str, init_args, stored: dict) -> None:
        """Stored values fill ``--<group>.*`` options, except those given on the command line (with
        a note when they differ from the checkpoint's)."""
        for name, value in stored.items():
            if name not in init_args:
                continue
            if f"{group}.{name}" in self._explicit:
                if init_args[name] != value:
                    note = f"note: --{group}.{name} {init_args[name]} overrides the checkpoint's {value}"
                    print(note, file=sys.stderr)
                continue
            init_args[name] = value

    @staticmethod
    def _pass_down(config, stored: dict, labels: bool = False) -> None:
        """What a task checkpoint says about its data, handed to the data module unless given:
        SQuAD's version, and when the checkpoint is the model itself, the task and the labels
        (the data module never opens a checkpoint)."""
        data = config.data.init_args
        if hasattr(data, "version_2_with_negative") and data.version_2_with_negative is None:
            data.version_2_with_negative = True if stored.get("task") == "squad_v2" else None
        if not labels:
            return
        # "classification" is the classification data module's default: the checkpoint knows better.
        if getattr(data, "task", None) == "classification" and stored.get("task"):
            data.task = stored["task"]
        if hasattr(data, "labels") and data.labels is None:
            data.labels = stored.get("label_names")


LINKED = (
    "pretrained",
    "task",
    "label_names",
)  # model options the CLI sets from the data or the checkpoint  # Lightning's names for checkpoints it finds itself

# Model options the data module follows too: pre-training's NSP (the data pairs sentences for its
# head), feature extraction's pooling (per-word vectors change the file layout).
SHARED_OPTIONS = ("nsp", "pooling")


# How this command runs the model (not a property of the checkpoint): never taken from one.
INFERENCE_OPTIONS = ("quantize", "quantize_backend", "runtime")


def early_stopping_options(config, has_validation: bool) -> tuple[int, float]:
    """``--early_stopping_patience`` and ``--early_stopping_min_delta``, checked (0: no early stopping)."""
    patience = config.get("early_stopping_patience") or 0
    min_delta = config.get("early_stopping_min_delta") or 0.0
    if patience < 0:
        raise UserError(
            f"--early_stopping_patience must be at least 1 (0: no early stopping), not {patience}"
        )
    if min_delta < 0:
        raise UserError(f"--early_stopping_min_delta must be at least 0, not {min_delta}")
    if min_delta and not patience:
        raise UserError("--early_stopping_min_delta applies with --early_stopping_patience N (N at least 1)")
    if patience and not has_validation:
        raise UserError(
            "--early_stopping_patience needs a validation set to watch: set --data.validation_file"
        )
    return patience, min_delta


def _refuse_inference_options(config) -> None:
    """int8 and the ONNX runtime are for a trained model: fit trains in float with PyTorch."""
    model = config.model.init_args
    if model.get("quantize"):
        raise UserError(
            "--model.quantize applies to validate, test and predict, not to fit (it trains in float)"
        )
    if model.get("runtime", "torch") != "torch":
        raise UserError("--model.runtime onnx applies to validate, test and predict, not to fit")
    if config.get("ckpt_path") and Source(config.ckpt_path).kind == Source.ONNX:
        raise UserError(f"--ckpt_path {config.ckpt_path}: an ONNX export cannot resume a fit; give the .ckpt")


def check_same_task(ckpt_path: str, stored: dict, config) -> None:
    """A checkpoint of another task (or another kind of model) under this config is an error, not a
    silent mismatch of heads and labels."""
    stored_kind = registry.stored_kind(ckpt_path, stored)
    hyper = stored["hyper_parameters"]
    stored_task = hyper.get("task")
    wanted_kind = registry.kind_of_class_path(config.model.get("class_path"))
    wanted_task = config.data.init_args.get("task") if config.data is not None else None
    if wanted_task == "classification":  # the generic default: the checkpoint decides
        wanted_task = None
    mismatch = (wanted_kind is not None and stored_kind.key != wanted_kind.key) or (
        stored_task
        and wanted_task
        and stored_task != wanted_task
        and {stored_task, wanted_task} != {"squad", "squad_v2"}
    )
    if mismatch:
        wanted_name = wanted_kind.key if wanted_kind is not None else config.model.get("class_path")
        wanted_task = wanted_task or {"tagging": "ner", "qa": "squad"}.get(wanted_name, wanted_name)
        raise UserError(
            f"{ckpt_path}: a checkpoint of task {stored_task!r} (a {stored_kind.key} model), but the config is for "
            f"{wanted_task!r} (a {wanted_name} model): use that task's config, or give the checkpoint alone"
        )


def _claim_run_directory(config, run_dir: Path) -> None:
    """A fit starts a new run directory, resumes the run in it (``--ckpt_path last`` or a path),
    or replaces it with ``--overwrite true``; it never silently mixes two runs."""
    ckpt_path = config.get("ckpt_path")
    if ckpt_path == "last":
        last = run_dir / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise UserError(f"--ckpt_path last: no {last} to resume from")
        config.ckpt_path = str(last)
        read_weights(last)  # a truncated or foreign last.ckpt: one line now, not Lightning's traceback
        return
    if ckpt_path:
        if ckpt_path not in CKPT_SHORTHANDS:
            read_weights(ckpt_path)
        return
    existing = run_files(run_dir)  # checked before Lightning too (tasks.preflight); a safety net here
    if not existing:
        return
    if not config.get("overwrite"):
        raise busy_run_error(run_dir, existing)
    # The old model's evaluations and predictions go with it: a run directory holds one model.
    for name in ("checkpoints", *EVALUATION_FOLDERS):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    (run_dir / "metrics.json").unlink(missing_ok=True)


def _model_class(config) -> type | None:
    """The class ``--model.class_path`` names (None when it cannot be imported)."""
    module_name, _, name = str(config.model.get("class_path", "")).rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        return None
