"""Early stopping on the task's main metric: it stops after ``--early_stopping_patience``
validations without improvement, best.ckpt and metrics.json stay the best validation's, the stop is
said (one line) and recorded, and a resumed run counts on from where it stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from .conftest import FAST_TRAINER_ARGS as FAST
from .conftest import ROOT, run_cli

# One step an epoch, and a learning rate so small that no validation can differ from the first:
# val/accuracy never improves after it.
FROZEN = (
    "--config", ROOT / "configs" / "sst2.yaml", "--trainer.limit_train_batches", "1",
    "--model.learning_rate", "1e-12", *FAST,
)  # fmt: skip
NO_DEV = "<a config that takes the validation file away>"  # made in the test's tmp_path


def fit(tiny_bert_dir: Path, run_dir: Path, *extra: object) -> int:
    return run_cli(
        "fit", *FROZEN, "--model.pretrained", tiny_bert_dir, "--trainer.default_root_dir", run_dir, *extra
    )


def test_a_metric_that_cannot_improve_stops_after_patience_validations_and_a_resumed_run_counts_on(
    tiny_bert_dir: Path, tmp_path: Path, capfd
):
    run_dir = tmp_path / "run"
    # Two epochs, patience 2: one validation without improvement, not enough to stop.
    assert fit(tiny_bert_dir, run_dir, "--trainer.max_epochs", "2", "--early_stopping_patience", "2") == 0
    assert "stopped_early" not in json.loads((run_dir / "metrics.json").read_text())
    assert "early stopping" not in capfd.readouterr().err

    # Resumed with room for 10 epochs: the waiting carries over, so the third validation stops it
    # (a fresh count would take the third as its best and stop at the fifth).
    resume = ("--ckpt_path", "last", "--trainer.max_epochs", "10", "--early_stopping_patience", "2")
    assert fit(tiny_bert_dir, run_dir, *resume) == 0
    reason = "val/accuracy did not improve by more than 0 for 2 validations (best 0.5 at step 1)"
    err = capfd.readouterr().err.splitlines()
    assert [line for line in err if line.startswith("early stopping")] == [
        f"early stopping at epoch 2, step 3: {reason}"
    ]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["stopped_early"] == {"epoch": 2, "step": 3, "reason": reason}
    assert metrics["best_checkpoint"]["epoch"] == 0 and metrics["best_checkpoint"]["step"] == 1
    # the input-length report of both files (the sample's sentences all fit in 128 tokens)
    sample = "data/glue/SST-2"
    assert metrics["input_lengths"] == {
        "train": {
            "file": f"{sample}/train.tsv",
            "max_seq_length": 128,
            "inputs": 64,
            "too_long": 0,
            "longest_tokens": 13,
        },
        "validation": {
            "file": f"{sample}/dev.tsv",
            "max_seq_length": 128,
            "inputs": 24,
            "too_long": 0,
            "longest_tokens": 11,
        },
    }
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (best["epoch"], best["global_step"]) == (0, 1)  # the first validation's weights
    assert last["global_step"] == 3  # stopped: not 10 steps


@pytest.mark.parametrize(
    "options, error",
    [
        (
            ("--early_stopping_patience", "-1"),
            "--early_stopping_patience must be at least 1 (0: no early stopping), not -1",
        ),
        (
            ("--early_stopping_patience", "2", "--early_stopping_min_delta", "-0.1"),
            "--early_stopping_min_delta must be at least 0, not -0.1",
        ),
        (
            ("--early_stopping_min_delta", "0.1"),
            "--early_stopping_min_delta applies with --early_stopping_patience N (N at least 1)",
        ),
        (
            ("--early_stopping_patience", "2", "--config", NO_DEV),
            "--early_stopping_patience needs a validation set to watch: set --data.validation_file",
        ),
    ],
)
def test_bad_early_stopping_options_are_refused_in_one_line(options, error, tiny_bert_dir, tmp_path, capfd):
    no_dev = tmp_path / "no_dev.yaml"
    no_dev.write_text("data:\n  init_args:\n    validation_file: null\n")
    options = [no_dev if option == NO_DEV else option for option in options]
    assert fit(tiny_bert_dir, tmp_path / "run", *options) == 2
    assert capfd.readouterr().err.strip().splitlines()[-1] == f"error: {error}"
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_fit_help_lists_the_early_stopping_options(capsys):
    assert run_cli("fit", "--config", ROOT / "configs" / "sst2.yaml", "--help") == 0
    out = capsys.readouterr().out
    assert "--early_stopping_patience" in out and "--early_stopping_min_delta" in out
