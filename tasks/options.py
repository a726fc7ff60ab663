"""Checks of option values, each failing with a one-line UserError that names the option."""

from __future__ import annotations

from collections.abc import Sequence

from .io import UserError

# The application's defaults for Lightning's Trainer options: Google's BERT recipe (and Hugging
# Face's Trainer) clips gradients at global norm 1.0.
TRAINER_DEFAULTS = {"gradient_clip_val": 1.0}

# Options the CLI sets from others (source, target, when): the tokenizer comes from the encoder's
# own source; task and labels flow from the data (the train file or the checkpoint) into the model.
LINKED_OPTIONS = (
    ("model.init_args.pretrained", "data.init_args.tokenizer", "parse"),
    ("data.task", "model.init_args.task", "instantiate"),
    ("data.label_names", "model.init_args.label_names", "instantiate"),
)

# Options of the Lightning commands besides the Trainer's and the classes': name -> (type, default, help).
COMMAND_OPTIONS: dict[str, tuple[type, object, str]] = {
    "checkpoint_every_n_steps": (
        int,
        0,
        "fit: also save checkpoints/last.ckpt every N optimizer steps (0: at the end of each epoch only)",
    ),
    "overwrite": (
        bool,
        False,
        "fit: replace the run already in the run directory (its checkpoints, metrics and evaluations)",
    ),
    "early_stopping_patience": (
        int,
        0,
        "fit: stop when the task's main metric has not improved for N validations in a row "
        "(0: no early stopping); best.ckpt and metrics.json stay the best validation's",
    ),
    "early_stopping_min_delta": (
        float,
        0.0,
        "fit: with --early_stopping_patience, an improvement of the main metric by this much or less does not count",
    ),
    "keep_last_ckpt": (
        bool,
        True,
        "fit: keep checkpoints/last.ckpt (what resumes the run) once the fit has completed",
    ),
}


def check_at_least(name: str, value: float, least: float, why: str = "") -> None:
    """``--data.<name>`` is at least ``least``."""
    if value < least:
        reason = f" ({why})" if why else ""
        raise UserError(f"--data.{name} must be at least {least}{reason}, not {value}")


def check_one_of(option: str, value: object, choices: Sequence[str]) -> None:
    """``option`` (spelt in full: ``--data.masking``) is one of ``choices``."""
    if value not in choices:
        raise UserError(f"{option} must be one of {', '.join(choices)}, not {value!r}")
