"""The record of a fit's run directory, read: its config, training log, metrics.json and best.ckpt's
step, and the task kind it is of. What ``python -m tasks report`` draws from (``tasks.report``).

Steps are counted as Lightning's trainer counts them, optimizer steps completed (1..N): its CSV log
names the 0-based index of the step being taken, so a 40-step run's last row says 39 and the
validation at the end of an 8-step epoch says 7; the reader adds one, and that epoch ends at 8."""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .checkpoint import load_mapped
from .data.glue import GLUE_TASKS
from .io import UserError
from .registry import TASKS, TaskKind, kind_of_class_path

# The per-task pictures of each registry kind (pre-training and features have only the curves).
PICTURES_OF_KIND = {"classification": "classification", "tagging": "ner", "qa": "qa", "pretraining": None}
PICTURES_OF_KIND["features"] = None


@dataclass
class Run:
    directory: Path
    config: dict[str, Any]
    log_path: Path
    log: list[dict[str, float | None]]
    metrics: dict[str, float | None] = field(default_factory=dict)
    task: str | None = None  # which per-task pictures (PICTURES_OF_KIND)
    kind: TaskKind | None = None  # the registry's row of model.class_path
    best: dict[str, Any] | None = None  # {"epoch", "global_step", "monitor"} of checkpoints/best.ckpt
    notes: list[str] = field(default_factory=list)  # the warnings, repeated at the end of the page

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)
        self.notes.append(message)

    def init_args(self, section: str, config: dict | None = None) -> dict[str, Any]:
        return ((self.config if config is None else config).get(section) or {}).get("init_args") or {}


def load_run(directory: Path) -> Run:
    if not directory.is_dir():
        problem = "it is a file" if directory.exists() else "no such directory"
        raise UserError(f"{directory} is not a run directory: {problem}")
    if not (directory / "config.yaml").is_file():
        raise UserError(f"{directory} is not a run directory: no config.yaml (python -m tasks fit writes it)")
    directory, config = directory.resolve(), read_yaml(directory / "config.yaml")
    log_path = find_fit_log(directory)
    if log_path is None:
        raise UserError(f"{directory}: no training log (logs/csv/fit/metrics.csv, or logs/csv/*/metrics.csv)")
    run = Run(directory, config, log_path, read_log(log_path))
    kind = kind_of_class_path((config.get("model") or {}).get("class_path"))
    run.kind = TASKS[kind.saves_as] if kind is not None and kind.saves_as else kind
    run.task = PICTURES_OF_KIND.get(run.kind.key) if run.kind is not None else None
    if kind is None:
        run.warn(f"{directory / 'config.yaml'}: unknown model.class_path: no per-task picture")
    path = directory / "metrics.json"
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))  # the numbers, not "best_checkpoint"
        run.metrics = {k: v for k, v in loaded.items() if v is None or isinstance(v, int | float)}
    except FileNotFoundError:
        run.warn(f"{path} not found: no metrics table")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON: {err}") from None
    run.best = read_best_checkpoint(run)
    return run


def read_log(path: Path) -> list[dict[str, float | None]]:
    """A CSV log's rows, every cell a float (empty ones None), ``step`` as steps completed (1..N)."""
    rows = []
    with path.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle), start=2):
            try:
                cells = {k: float(v) if v not in ("", None) else None for k, v in row.items() if k}
            except ValueError as err:
                raise UserError(f"{path}:{number}: {err}") from None
            if cells.get("step") is not None:
                cells["step"] += 1
            rows.append(cells)
    return rows


def total_steps(rows: list[dict]) -> int:
    """The optimizer steps of the run: the last logged step (end-of-epoch validation logs at the
    epoch's last step, so a validated run's last row is its last step)."""
    return int(max((r["step"] for r in rows if r.get("step") is not None), default=0))


def epoch_ends(rows: list[dict]) -> list[int]:
    """Steps completed when each epoch but the last ended. The log bounds each end: epoch e ended
    after its last logged step and before epoch e+1's first one; the end-of-epoch validation row
    pins it. Epochs are equally long, so the shortest length that fits every bound is taken; when
    none fits (a log not starting at epoch 0), each epoch's last logged step is."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for row in rows:
        if row.get("epoch") is None or row.get("step") is None:
            continue
        epoch, step = int(row["epoch"]), int(row["step"])
        first[epoch], last[epoch] = min(first.get(epoch, step), step), max(last.get(epoch, step), step)
    epochs = sorted(first)
    bounds = [(last[e], first[f] - 1) for e, f in zip(epochs, epochs[1:])]
    done = [e + 1 for e in epochs[:-1]]  # epochs completed at each end
    shortest = max((-(-low // n) for (low, _), n in zip(bounds, done)), default=0)
    fits = all(low <= shortest * n <= high for (low, high), n in zip(bounds, done))
    if fits and epochs and epochs[0] == 0:
        return [shortest * n for n in done]
    return [low for low, _ in bounds]


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(document, dict):
        raise UserError(f"{path}: not a config (expected a YAML mapping)")
    return document


def find_fit_log(directory: Path) -> Path | None:
    """``logs/csv/fit/metrics.csv``, else the newest ``logs/csv/*/metrics.csv`` with ``train/loss``."""
    if (directory / "logs" / "csv" / "fit" / "metrics.csv").is_file():
        return directory / "logs" / "csv" / "fit" / "metrics.csv"
    logs = sorted((directory / "logs" / "csv").glob("*/metrics.csv"), key=lambda p: p.stat().st_mtime)
    for path in reversed(logs):  # older runs: version_0, version_1, ...
        with path.open(encoding="utf-8", newline="") as handle:
            if "train/loss" in next(csv.reader(handle), []):
                return path
    return None


def read_best_checkpoint(run: Run) -> dict[str, Any] | None:
    path = run.directory / "checkpoints" / "best.ckpt"
    if not path.is_file():
        run.warn(f"{path} not found: the best epoch is not marked")
        return None
    try:  # mmap: the epoch is read without loading the weights
        checkpoint = load_mapped(path)
    except Exception as err:  # a truncated or foreign file: the report still has the rest
        run.warn(f"{path} cannot be read ({type(err).__name__}): the best epoch is not marked")
        return None
    states = (checkpoint.get("callbacks") or {}).values()
    monitor = next((s.get("monitor") for s in states if s.get("monitor") not in (None, "step")), None)
    get = checkpoint.get
    return {"epoch": get("epoch"), "global_step": get("global_step"), "monitor": monitor}


def main_metric(run: Run) -> str:
    """What best.ckpt was chosen by (stored in it), else the task's default."""
    if run.best and run.best["monitor"]:
        return run.best["monitor"]
    task = str(run.init_args("data").get("task"))
    if run.task != "classification":
        return run.kind.main_metric if run.kind is not None else "val/loss"
    default = "val/pearson" if task == "regression" else "val/accuracy"
    return f"val/{GLUE_TASKS[task].main_metric}" if task in GLUE_TASKS else default


def resolve_data_file(name: Any, run: Run) -> Path | None:
    """A config's data file: absolute, else from the current directory, the run directory or its parents."""
    path = Path(str(name))  # base / an absolute path is that path
    bases = (Path.cwd(), run.directory.resolve(), *run.directory.resolve().parents)
    return next((base / path for base in bases if (base / path).is_file()), None)


def latest_evaluation(run: Run, artifact: Path) -> tuple[str, dict[str, Any], str | None]:
    """(command, config, data file) of the evaluation that wrote ``artifact``: the newest config* before it."""
    found = [(0.0, "fit", run.directory / "config.yaml")]
    for command in ("fit", "validate", "test"):
        path = run.directory / ("config.yaml" if command == "fit" else f"config.{command}.yaml")
        if path.is_file() and path.stat().st_mtime <= artifact.stat().st_mtime:
            found.append((path.stat().st_mtime, command, path))
    _, command, path = max(found)
    config = run.config if command == "fit" else read_yaml(path)
    data_file = run.init_args("data", config).get("test_file" if command == "test" else "validation_file")
    return command, config, data_file
