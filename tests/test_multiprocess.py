"""Many processes give the same answers as one: real 2-process gloo DDP runs of every task.

Each task is fitted briefly on one process; then validate and predict run on one process
in-process and on two processes (``--trainer.strategy ddp --trainer.devices 2``, a subprocess),
and the metrics and prediction files must agree: every dev example counted exactly once, one
predictions file in input order.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import QUIET_TRAINER_ARGS as QUIET
from .conftest import ROOT, run_cli

pytestmark = pytest.mark.multiprocess

ONE = ["--trainer.accelerator", "cpu", "--trainer.devices", "1"]
TWO = ["--trainer.strategy", "ddp", "--trainer.accelerator", "cpu", "--trainer.devices", "2"]

SQUAD_WINDOWS = ["--data.max_seq_length", "64", "--data.max_query_length", "24", "--data.doc_stride", "24"]
TASKS = {
    # config, options that keep the fit short, featurisation options of every command, predictions file
    "mrpc": (
        "configs/mrpc.yaml",
        ["--trainer.max_steps", "3", "--data.batch_size", "8"],
        [],
        "predictions.jsonl",
    ),
    "ner": (
        "configs/ner.yaml",
        ["--trainer.max_steps", "3", "--data.batch_size", "8"],
        [],
        "predictions.jsonl",
    ),
    "squad_v2": (
        "configs/squad_v2.yaml",
        ["--trainer.max_steps", "2", "--data.batch_size", "8"],
        SQUAD_WINDOWS,
        "predictions.jsonl",
    ),
}


def two_processes(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tasks", *map(str, args), *TWO, *QUIET],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def assert_same_metrics(one: Path, two: Path) -> None:
    first, second = json.loads(one.read_text()), json.loads(two.read_text())
    for scores in (first, second):
        scores.pop("best_checkpoint", None)  # a fit's, with its own path
        scores.pop("input_lengths", None)  # a fit's covers its train file too
    assert set(first) == set(second)
    # every dev example counted once, on one process and on two
    counts = [(first[k], first[k.replace("evaluated", "total")]) for k in first if "evaluated_examples" in k]
    assert counts and all(evaluated == total > 0 for evaluated, total in counts)
    for name, value in first.items():
        assert math.isclose(value, second[name], rel_tol=1e-6, abs_tol=1e-6), (name, value, second[name])


def only(directory: Path, pattern: str) -> Path:
    """The one file under ``directory`` that ``pattern`` matches (a predict's predict/<input>/ folder)."""
    (found,) = directory.glob(pattern)
    return found


def assert_same_predictions(one: Path, two: Path) -> None:
    """Line for line the same; numbers (probabilities, scores) equal to float32 rounding."""
    first, second = one.read_text(encoding="utf-8").splitlines(), two.read_text(encoding="utf-8").splitlines()
    assert len(first) == len(second) > 0
    if one.suffix != ".jsonl":
        assert first == second
        return
    for a, b in zip(map(json.loads, first), map(json.loads, second), strict=True):
        numbers = {k for k, v in a.items() if isinstance(v, float) or isinstance(v, dict)}
        assert {k: v for k, v in a.items() if k not in numbers} == {
            k: v for k, v in b.items() if k not in numbers
        }
        for key in numbers:
            values = a[key] if isinstance(a[key], dict) else {"": a[key]}
            others = b[key] if isinstance(b[key], dict) else {"": b[key]}
            assert values.keys() == others.keys()
            assert all(math.isclose(values[k], others[k], abs_tol=2e-6) for k in values)


@pytest.fixture(scope="module", params=sorted(TASKS))
def fitted(request, mixing_bert_dir: Path, tmp_path_factory) -> tuple[str, Path]:
    task = request.param
    config, short, windows, _ = TASKS[task]
    run_dir = tmp_path_factory.mktemp(task) / "fit"
    args = ["--config", config, "--model.pretrained", mixing_bert_dir, "--trainer.default_root_dir", run_dir]
    assert run_cli("fit", *args, *short, *windows, "--model.learning_rate", "1e-3", *ONE, *QUIET) == 0
    return task, run_dir


def test_validate_and_predict_on_two_processes_equal_one(fitted, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(ROOT)
    task, run_dir = fitted
    config, _, windows, prediction_file = TASKS[task]
    checkpoint = run_dir / "checkpoints" / "best.ckpt"
    for command in ("validate", "predict"):
        args = [command, "--config", config, "--ckpt_path", checkpoint, *windows]
        assert run_cli(*args, "--trainer.default_root_dir", tmp_path / "one", *ONE, *QUIET) == 0
        two_processes(*args, "--trainer.default_root_dir", tmp_path / "two")
    one, two = (tmp_path / name / "eval" / "validation" for name in ("one", "two"))
    assert_same_metrics(one / "metrics.json", two / "metrics.json")
    assert_same_predictions(
        *(only(tmp_path / name, f"predict/*/{prediction_file}") for name in ("one", "two"))
    )
    if task == "squad_v2":  # validate's official-format files too
        for name in ("predictions.json", "null_odds.json"):
            assert json.loads((one / name).read_text()).keys() == json.loads((two / name).read_text()).keys()


def test_fit_on_two_processes_logs_what_its_best_checkpoint_scores_on_one(
    mixing_bert_dir, tmp_path, monkeypatch
):
    monkeypatch.chdir(ROOT)
    config, short, _, _ = TASKS["ner"]
    run_dir = tmp_path / "fit"
    args = [
        "--config",
        config,
        "--model.pretrained",
        mixing_bert_dir,
        *short,
        "--model.learning_rate",
        "1e-3",
    ]
    two_processes("fit", *args, "--trainer.default_root_dir", run_dir)
    checkpoint = run_dir / "checkpoints" / "best.ckpt"
    again = ["validate", "--config", config, "--ckpt_path", checkpoint, *ONE, *QUIET]
    assert run_cli(*again, "--trainer.default_root_dir", tmp_path / "one") == 0
    assert_same_metrics(run_dir / "metrics.json", tmp_path / "one" / "eval" / "validation" / "metrics.json")
