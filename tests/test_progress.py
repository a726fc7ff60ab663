"""Progress when stderr is a file (nohup, SLURM, CI, tee): lines with steps, totals that respect
max_steps, and validation and predict progress; on a terminal, tqdm's bar cut to max_steps."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

from tasks.io import UserError
from tasks.progress import (
    EVERY_VARIABLE,
    ProgressLines,
    StepBoundedBar,
    batches_left_in_epoch,
    progress_callback,
    progress_interval,
)

from .conftest import ROOT, run_cli

SAMPLE = ROOT / "data" / "glue" / "SST-2"


def test_fit_with_stderr_in_a_file_prints_progress_lines(tiny_bert_dir, tmp_path, monkeypatch, capfd):
    run = tmp_path / "run"
    log = tmp_path / "stderr.log"
    # 16 batches of 4 an epoch and 3 epochs allowed, but max_steps stops the fit at 3 steps
    args = ["--config", "configs/sst2.yaml", "--data.batch_size", "4", "--trainer.accelerator", "cpu"]
    args += ["--trainer.devices", "1", "--trainer.enable_model_summary", "false"]
    fit = ["fit", *args, "--model.pretrained", tiny_bert_dir, "--trainer.default_root_dir", run]
    fit += ["--data.train_file", SAMPLE / "train.tsv", "--data.validation_file", SAMPLE / "dev.tsv"]
    fit += ["--trainer.max_steps", "3", "--trainer.max_epochs", "3"]
    with log.open("w") as stderr:
        subprocess.run(
            [sys.executable, "-m", "tasks", *map(str, fit)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, EVERY_VARIABLE: "0"},
            check=True,
            timeout=600,
        )
    lines = log.read_text().splitlines()
    assert "fit: 3 steps (1 epoch of 16 batches), a line every 0 s" in lines
    steps = [line for line in lines if line.startswith("epoch ")]
    assert [line.split(" loss ")[0] for line in steps] == [
        "epoch 1/1 step 1/3 (33%)",
        "epoch 1/1 step 2/3 (67%)",
        "epoch 1/1 step 3/3 (100%)",
    ]
    assert all(re.search(r" loss \d+\.\d{4} \d+\.\d samples/s ETA \d+:\d\d:\d\d$", line) for line in steps)
    assert steps[-1].endswith("ETA 0:00:00")
    assert lines.index("validation: 1 batch") < lines.index("validation 1/1 batches")
    assert any(re.fullmatch(r"validation: done in \d+:\d\d:\d\d", line) for line in lines)
    assert any(re.fullmatch(r"fit: done, step 3 in \d+:\d\d:\d\d", line) for line in lines)

    # predict in this process (pytest's stderr is not a terminal either)
    monkeypatch.setenv(EVERY_VARIABLE, "0")
    capfd.readouterr()
    predict = ["predict", *args, "--ckpt_path", run / "checkpoints" / "best.ckpt"]
    predict += ["--data.predict_file", SAMPLE / "test.tsv", "--data.predictions_file", tmp_path / "p.jsonl"]
    assert run_cli(*predict, "--data.eval_batch_size", "8", "--trainer.default_root_dir", run) == 0
    err = capfd.readouterr().err.splitlines()
    total = next(int(m[1]) for line in err if (m := re.fullmatch(r"predict: (\d+) batch(es)?", line)))
    assert total > 1
    assert [line for line in err if re.fullmatch(r"predict \d+/\d+ batches", line)] == [
        f"predict {n}/{total} batches" for n in range(1, total + 1)
    ]


def test_a_terminal_keeps_the_bar_its_epoch_total_cut_to_max_steps(monkeypatch):
    monkeypatch.setattr(sys, "stderr", SimpleNamespace(isatty=lambda: True))
    assert isinstance(progress_callback(), StepBoundedBar)
    trainer = SimpleNamespace(num_training_batches=125, max_steps=2, global_step=0, accumulate_grad_batches=1)
    assert batches_left_in_epoch(trainer) == 2
    trainer.max_steps, trainer.accumulate_grad_batches = 130, 4  # 130 steps of 4 batches: the epoch
    assert batches_left_in_epoch(trainer) == 125
    trainer.max_steps = -1
    assert batches_left_in_epoch(trainer) == 125


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(EVERY_VARIABLE, raising=False)
    assert progress_interval() == 30
    monkeypatch.setenv(EVERY_VARIABLE, "2.5")
    assert isinstance(progress_callback(), ProgressLines) and progress_callback().every == 2.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(EVERY_VARIABLE, bad)
        with pytest.raises(UserError, match=f"{EVERY_VARIABLE}='{bad}': expected a number of seconds"):
            progress_interval()
