"""``python -m tasks sweep``: a grid of fine-tuning configurations (the BERT paper's by default) over
seeds, as one resumable Optuna study; each trial is an ordinary ``fit`` in its own run directory
``<run>/sweep/<cell>/``, scored by the task's main metric on validation (its ``metrics.json``).

Trials run in the worker's process, through ``tasks.cli.main(["fit", ...])``: the code path users
run (preflight, run-directory lock, one error handler), without paying Lightning's import for
every trial, and a ``kill -9`` of the worker takes its trial with it (no orphan fit holding the
trial's lock). Claims: a cell is claimed by ``study.ask()``, which gives each new trial a number
no other worker gets (the storage's transaction; the journal's replay), and trial n runs cell n;
only a failed cell is claimed again, by a later trial (each worker a different one of the free
cells). The cell's run directory is locked for the trial, so even then two workers sharing the
outputs never fit one cell at once, and a cell whose fit completed is read, not fitted again.

Dead workers: each holds a lock file in ``<sweep dir>/workers/`` for its life (the kernel drops a
flock when its process dies, ``kill -9`` included); a RUNNING trial whose worker's lock is free is
failed and its cell run again, resuming from the cell's ``checkpoints/last.ckpt`` when it has one.
A database storage also gets Optuna's heartbeat, for workers on machines that share no files.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .io import CommandParser, UserError, one_line
from .preflight import Invocation, preflight
from .rundir import lock_run_directory, release_all, run_files
from .sweep_grid import Cell, Grid, cell_of, cells, check_options_exist, parse_seeds, read_grid
from .sweep_results import summarize
from .sweep_storage import PRUNED_AT, open_storage
from .sweep_workers import Heartbeat, WorkerLock, worker_is_dead

# Options the sweep chooses itself for each trial.
_OWN_OPTIONS = ("--seed_everything", "--ckpt_path", "--overwrite")  # default_root_dir: the sweep's run


@dataclass
class Sweep:
    config: str
    passthrough: list[str]  # options given to every trial's fit
    grid: Grid
    seeds: list[int]
    cells: list[Cell]
    directory: Path
    storage_url: str
    study_name: str
    metric: str
    direction: str  # "maximize" | "minimize"
    prune: bool

    def definition(self) -> dict[str, Any]:
        """What every worker of the study must agree on."""
        cells_ = [{"options": c.options, "seed": c.seed} for c in self.cells]
        return {"config": self.config, "options": self.passthrough, "cells": cells_, "metric": self.metric}

    def fit_args(self, cell: Cell) -> list[str]:
        run_dir = self.directory / cell.name
        return [
            "fit",
            "--config",
            self.config,
            "--trainer.devices=1",
            *self.passthrough,
            *cell.fit_options(),
            f"--trainer.default_root_dir={run_dir}",
        ]


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = CommandParser(
        prog="python -m tasks sweep",
        description="Fine-tune every configuration of a grid (the BERT paper's: learning rate 5e-5/3e-5/2e-5 x "
        "batch 16/32 x 2/3/4 epochs) at every seed, each an ordinary fit in <run>/sweep/<cell>/, as one "
        "resumable Optuna study; writes sweep.json, prints mean +- sd per configuration, links the best "
        "configuration's best.ckpt as <sweep dir>/best.ckpt.",
        epilog="Other options (--trainer.max_epochs, --data.train_file, ...) are given to every trial's fit.",
    )
    parser.add_argument("--config", "-c", required=True, help="the task config, e.g. configs/mrpc.yaml")
    parser.add_argument(
        "--grid", default="paper", help="'paper' (default) or a grid YAML file (lists or ranges)"
    )
    parser.add_argument("--seeds", help="comma-separated seeds, e.g. 42,43,44 (default: the config's seed)")
    parser.add_argument("--trials", type=int, help="run at most this many trials in this worker, then stop")
    parser.add_argument(
        "--storage",
        help="an Optuna storage URL (postgresql://..., sqlite:///...) or a journal file path, shared by "
        "workers on several machines (default: sqlite in the sweep directory)",
    )
    parser.add_argument("--study", help="the study's name (default: the config's name)")
    parser.add_argument(
        "--prune",
        type=lambda v: v.lower() in ("true", "1", "yes"),
        default=False,
        metavar="true|false",
        help="stop trials whose main metric at an epoch's validation is below the median of the others' (Optuna's MedianPruner)",
    )
    return parser.parse_known_args(argv)


def main(argv: list[str]) -> int:
    args, passthrough = _parse(argv)
    sweep = prepare(args, passthrough)  # every refusal comes before the first fit
    from .sweep_results import BEST_LINK, PLOT_FILE, SWEEP_FILE, plot

    study = load_study(sweep)
    code = run_worker(sweep, study, args.trials)
    summary = summarize(sweep, study)
    drawn = plot(summary, sweep.directory / PLOT_FILE)
    written = (
        [SWEEP_FILE] + ([BEST_LINK] if summary["best"] is not None else []) + ([PLOT_FILE] if drawn else [])
    )
    print(f"wrote {sweep.directory}/ ({', '.join(written)}, one run directory per trial)")
    return code


def prepare(args: argparse.Namespace, passthrough: list[str]) -> Sweep:
    """The sweep the options describe, checked: config, grid, options, data files, storage."""
    for arg in passthrough:
        key = arg.split("=", 1)[0]
        if key in _OWN_OPTIONS:
            raise UserError(
                f"{key}: the sweep chooses it for each trial" + (" (use --seeds)" if "seed" in key else "")
            )
    invocation = Invocation.read(["fit", "--config", args.config, *passthrough])  # the config, as YAML
    if args.trials is not None and args.trials < 1:
        raise UserError(f"--trials must be at least 1, not {args.trials}")
    grid = read_grid(args.grid)
    model_class, data_class = invocation.value("model.class_path"), invocation.value("data.class_path")
    check_options_exist(grid, model_class, data_class, args.config)
    if args.seeds is not None:
        seeds = parse_seeds(args.seeds)
    else:
        seed = invocation.value("seed_everything")
        seeds = [int(seed) if str(seed).lstrip("-").isdigit() else 42]
    devices = invocation.value("trainer.devices")
    if devices is not None and str(devices) not in ("1", "auto"):
        # A multi-process fit inside the sweep's process would start copies of the sweep itself.
        raise UserError(
            f"--trainer.devices {devices}: a sweep's trials use one device each; run one sweep worker per "
            "device instead (CUDA_VISIBLE_DEVICES=i python -m tasks sweep ... on one --storage)"
        )
    run_dir = invocation.run_dir()
    default_study = Path(args.config).stem
    study = args.study or default_study
    directory = run_dir / ("sweep" if study == default_study else f"sweep-{study}")
    # The fit's own up-front checks (data files, config paths), for a trial directory not yet made.
    preflight(
        ["fit", "--config", args.config, *passthrough, f"--trainer.default_root_dir={directory / '.check'}"]
    )
    if not invocation.value("data.validation_file") and not invocation.value("data.dataset"):
        raise UserError(
            f"{args.config}: a sweep scores each trial on validation: give --data.validation_file"
        )
    url = args.storage or f"sqlite:///{(directory / 'sweep.db').resolve()}"
    if args.storage is None:
        directory.mkdir(parents=True, exist_ok=True)
    open_storage(url)  # a URL that cannot be opened: refused here
    metric = _main_metric(model_class, invocation.value("data.task"))
    direction = "minimize" if metric.endswith("loss") else "maximize"
    return Sweep(
        args.config,
        passthrough,
        grid,
        seeds,
        cells(grid.configurations(), seeds),
        directory,
        url,
        study,
        metric,
        direction,
        args.prune,
    )


def _main_metric(model_class: str | None, task: str | None) -> str:
    """The metric best.ckpt is chosen by: the registry row's, a classifier's by its task."""
    from . import registry

    kind = registry.kind_of_class_path(model_class)
    if kind is None:
        return "val/loss"
    if kind.key in ("classification", "distill_classification"):
        from .classification import metric_names

        return f"val/{metric_names(task, 2)[0]}"
    return kind.main_metric


def load_study(sweep: Sweep):
    """The sweep's study, made by the first worker; a later one must bring the same grid and options."""
    import optuna

    storage = open_storage(sweep.storage_url)
    for attempt in range(5):  # two workers starting at once may race to create it
        try:
            study = optuna.create_study(
                study_name=sweep.study_name,
                storage=storage,
                direction=sweep.direction,
                sampler=CellSampler(sweep.cells),
                load_if_exists=True,
            )
            break
        except Exception:
            if attempt == 4:
                raise
            time.sleep(0.5 + attempt)
    stored = study.user_attrs.get("definition")
    if stored is None:
        study.set_user_attr("definition", sweep.definition())
    elif stored != _jsonable(sweep.definition()):
        ours = _jsonable(sweep.definition())
        differs = [key for key in ours if stored.get(key) != ours[key]]
        what = {
            "cells": "grid or seeds",
            "options": f"options (it has: {' '.join(stored.get('options', []))})",
        }
        raise UserError(
            f"study {sweep.study_name} in {sweep.storage_url} was made with another "
            f"{', '.join(what.get(key, key) for key in differs)}: give the same, or --study NAME for a new study"
        )
    return study


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value))


class CellSampler:
    """Optuna's sampler interface over the cells: a trial's params are its cell's options and seed."""

    def __new__(cls, sweep_cells: list[Cell]):
        import optuna

        class _Sampler(optuna.samplers.BaseSampler):
            def infer_relative_search_space(self, study, trial):
                return {}

            def sample_relative(self, study, trial, search_space):
                return {}

            def sample_independent(self, study, trial, name, distribution):
                cell = sweep_cells[trial.user_attrs["cell"]]
                return cell.seed if name == "seed" else cell.options[name]

        return _Sampler()


# -- the worker ---------------------------------------------------------------------------------


def run_worker(sweep: Sweep, study, max_trials: int | None, run: Callable | None = None) -> int:
    """Run trials until every cell is done (or ``max_trials``); 0, or 2 after a trial's user error.
    ``run(sweep, study, trial, cell)`` runs one claimed cell and tells the study (``run_trial``)."""
    run = run or run_trial
    worker = WorkerLock(sweep.directory)
    try:
        done = 0
        while max_trials is None or done < max_trials:
            fail_dead_trials(sweep, study, worker)
            if not free_cells(sweep, study.get_trials(deepcopy=False)):
                break
            trial = study.ask()  # the claim: a trial number no other worker gets
            cell = choose_cell(sweep, study.get_trials(deepcopy=False), trial.number)
            trial.set_user_attr("worker", worker.name)
            if cell is not None:
                trial.set_user_attr("cell", cell.index)
            if cell is None:  # another worker took the last free cell meanwhile
                trial.set_user_attr("unused", True)
                study.tell(trial, state=_state("FAIL"))
                break
            code = run(sweep, study, trial, cell)
            summarize(sweep, study, show=False)  # sweep.json says where the study stands after each trial
            done += 1
            if code != 0:
                return code
        return 0
    finally:
        worker.release()


def free_cells(sweep: Sweep, trials: list) -> list[int]:
    """Cells that no trial has completed, pruned or is running."""
    taken = {
        cell_of(t, len(sweep.cells)) for t in trials if t.state.name in ("COMPLETE", "PRUNED", "RUNNING")
    }
    return [c for c in range(len(sweep.cells)) if c not in taken]


def choose_cell(sweep: Sweep, trials: list, number: int) -> Cell | None:
    """Trial n runs cell n; a later trial (a failed cell's retry) one of the free cells, workers
    taking different ones by their trial numbers."""
    n = len(sweep.cells)
    if number < n:
        return sweep.cells[number]
    free = free_cells(sweep, [t for t in trials if t.number != number])
    return sweep.cells[free[(number - n) % len(free)]] if free else None


def run_trial(sweep: Sweep, study, trial, cell: Cell) -> int:
    """Fit one cell (or read its completed fit) and tell the study how it went."""
    import optuna

    from .cli import main as cli_main

    record_params(trial, sweep)
    run_dir = sweep.directory / cell.name
    trial.set_user_attr("run_dir", str(run_dir))
    try:
        lock_run_directory(run_dir, "sweep")
    except UserError as err:
        if " is in use by " not in str(err):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        # another worker fits this cell (a retry both claimed): it is theirs
        print(f"note: {one_line(err)}: leaving the cell to it", file=sys.stderr)
        trial.set_user_attr("unused", True)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return 0
    heartbeat = Heartbeat(study, trial)
    started = time.time()
    try:
        metrics_file = run_dir / "metrics.json"
        if not metrics_file.is_file():  # else: fitted to the end by a worker that died before telling
            args = sweep.fit_args(cell)
            if (run_dir / "checkpoints" / "last.ckpt").is_file():
                args.append("--ckpt_path=last")  # resumed: ends as the uninterrupted run would
                print(
                    f"note: {run_dir}: resuming the interrupted trial from checkpoints/last.ckpt",
                    file=sys.stderr,
                )
            elif run_files(run_dir):
                args.append("--overwrite=true")
            if sweep.prune:
                args += [
                    "--trainer.callbacks+=tasks.sweep_pruning.ReportToStudy",
                    f"--trainer.callbacks.storage={sweep.storage_url}",
                    f"--trainer.callbacks.study={sweep.study_name}",
                    f"--trainer.callbacks.trial={trial._trial_id}",
                ]
            print(f"sweep: trial {trial.number}: {run_dir.name}", file=sys.stderr)
            code = cli_main(args)
            if code != 0:
                raise _TrialFailed(code)
        value = _read_metric(metrics_file, sweep.metric)
    except BaseException as err:
        heartbeat.stop()
        trial.set_user_attr("wall_s", round(time.time() - started, 1))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        if isinstance(err, _TrialFailed):
            return err.code
        if isinstance(err, UserError):
            print(f"error: {one_line(err)}", file=sys.stderr)
            return 2
        raise
    finally:
        release_all()
    heartbeat.stop()
    trial.set_user_attr("wall_s", round(time.time() - started, 1))
    pruned = (
        PRUNED_AT in next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number).user_attrs
    )
    if pruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, value)
    return 0


def record_params(trial, sweep: Sweep) -> None:
    """The trial's cell as its params (CellSampler answers each with the cell's value)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    for name, d in sweep.grid.distributions().items():
        if isinstance(d, CategoricalDistribution):
            trial.suggest_categorical(name, d.choices)
        elif isinstance(d, IntDistribution):
            trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
        else:
            trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
    trial.suggest_categorical("seed", sweep.seeds)


class _TrialFailed(Exception):
    def __init__(self, code: int):
        self.code = code


def _read_metric(path: Path, metric: str) -> float:
    import json

    value = json.loads(path.read_text(encoding="utf-8")).get(metric)
    if not isinstance(value, (int, float)):
        raise UserError(f"{path}: no {metric} (the sweep scores trials by it)")
    return float(value)


def _state(name: str):
    import optuna

    return optuna.trial.TrialState[name]


def fail_dead_trials(sweep: Sweep, study, worker: WorkerLock) -> None:
    """RUNNING trials of dead workers (and stale heartbeats) are failed: their cells are free again."""
    import optuna

    if getattr(study._storage, "get_heartbeat_interval", lambda: None)():  # a database's heartbeats
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = trial.user_attrs.get("worker")
        if owner != worker.name and worker_is_dead(sweep.directory, owner):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            print(
                f"note: trial {trial.number} was running in a worker that is gone ({owner}): run again",
                file=sys.stderr,
            )
