"""The command line: LightningCLI over the task modules, with the run-directory conventions."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from bert_core import CheckpointError, ConfigError

from .callbacks import RunConfigSaver
from .checkpoint import is_task_checkpoint, read_checkpoint
from .datamodule import TaskDataModule
from .io import UserError
from .module import TaskModule


class BertTasksCLI(LightningCLI):
    """``python -m tasks fit|validate|test|predict --config configs/X.yaml [--key value ...]``."""

    def __init__(self, args: list[str] | None = None, run: bool = True):
        super().__init__(
            TaskModule,
            TaskDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=RunConfigSaver,
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser) -> None:
        # The tokenizer always comes from the encoder's own source; task and labels flow from
        # the data (the train file or the checkpoint) into the model, which stores them.
        parser.link_arguments("model.init_args.pretrained", "data.init_args.tokenizer")
        parser.link_arguments("data.task", "model.init_args.task", apply_on="instantiate")
        parser.link_arguments("data.label_names", "model.init_args.label_names", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.trainer
        if trainer.default_root_dir is None:
            trainer.default_root_dir = str(Path("outputs") / _run_name(config))
        if trainer.logger is None or trainer.logger is True:
            trainer.logger = [
                {
                    "class_path": "lightning.pytorch.loggers.CSVLogger",
                    "init_args": {"save_dir": trainer.default_root_dir, "name": "logs/csv"},
                },
                {
                    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                    "init_args": {"save_dir": trainer.default_root_dir, "name": "logs/tensorboard"},
                },
            ]
        ckpt_path = config.get("ckpt_path")
        if ckpt_path and self.subcommand != "fit" and ckpt_path not in ("best", "last", "hpc", "registry"):
            # A .ckpt alone is enough: the encoder is rebuilt from the config stored in it (weights
            # come with Lightning's loading), the tokenizer and the labels from what it carries.
            config.model.init_args.pretrained = ckpt_path
            config.data.init_args.tokenizer = ckpt_path
            self._pass_down(config, read_checkpoint(ckpt_path)["hyper_parameters"], labels=True)
        elif is_task_checkpoint(config.model.init_args.pretrained):
            self._pass_down(config, read_checkpoint(config.model.init_args.pretrained)["hyper_parameters"])

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


def _run_name(config) -> str:
    configs = config.get("config") or []
    if configs:
        return Path(str(configs[-1])).stem
    return config.model.class_path.rsplit(".", 1)[-1].lower()


USER_ERRORS = (UserError, CheckpointError, ConfigError, FileNotFoundError)


# Subcommands besides LightningCLI's: name -> ("module:function", one line of help).
EXTRA_COMMANDS = {
    "score-squad": ("tasks.metrics.squad:main", "score a SQuAD predictions file with the official EM/F1"),
}
LIGHTNING_COMMANDS = {
    "fit": "fine-tune on the train file, validating on the dev file each epoch",
    "validate": "score a checkpoint on the dev file",
    "test": "score a checkpoint on the test file",
    "predict": "predict on a file, writing predictions into the run directory",
}


def print_help() -> None:
    print("usage: python -m tasks <command> [--config configs/<name>.yaml] [--key value ...]\n\ncommands:")
    for name, line in {**LIGHTNING_COMMANDS, **{k: v for k, (_, v) in EXTRA_COMMANDS.items()}}.items():
        print(f"  {name:<12}{line}")
    configs = sorted(Path("configs").glob("*.yaml"))
    if configs:
        print(f"\nconfigs: {' '.join(str(c) for c in configs)}")
    print("\n'python -m tasks <command> --help' lists a command's options.")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print_help()
        return 0
    if args[0] in EXTRA_COMMANDS:
        module_name, function = EXTRA_COMMANDS[args[0]][0].split(":")
        return getattr(importlib.import_module(module_name), function)(args[1:])
    try:
        BertTasksCLI(args=argv)  # None: LightningCLI reads sys.argv itself
    except Exception as err:
        user_error = _user_error_in(err)
        if user_error is None:
            raise
        print(f"error: {user_error}", file=sys.stderr)
        return 2
    return 0


def _user_error_in(err: BaseException) -> BaseException | None:
    """The user error behind ``err``: jsonargparse wraps errors raised while it instantiates classes."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, USER_ERRORS):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
