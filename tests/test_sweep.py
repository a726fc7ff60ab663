"""``python -m tasks sweep``: a grid over seeds as one Optuna study of ordinary fits. sweep.json and
the table agree with each trial's own metrics.json; bad input is refused in one line before any
fit; two workers on one study claim every cell once; a worker killed with kill -9 mid-trial is
taken over by another and the sweep ends as the uninterrupted one."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import yaml

from .conftest import FAST_TRAINER_ARGS, ROOT, run_cli

GRID = "model.learning_rate: [1.0e-4, 1.0e-2]\n"


def sweep_args(pretrained: Path, root: Path, grid: Path, seeds: str = "1,2") -> list[str]:
    """2 configurations x the seeds, fits of 2 steps on the SST-2 sample; last.ckpt after every step."""
    return [
        "sweep", "--config", "configs/sst2.yaml", "--grid", str(grid), "--seeds", seeds,
        "--model.pretrained", str(pretrained), "--trainer.max_steps", "2", "--checkpoint_every_n_steps", "1",
        "--data.test_file", "null", "--data.predict_file", "null", "--trainer.default_root_dir", str(root),
        *FAST_TRAINER_ARGS,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def swept(mixing_bert_dir, tmp_path_factory):
    """An uninterrupted sweep, in-process: (run directory, what it printed, its arguments)."""
    base = tmp_path_factory.mktemp("sweep")
    (base / "grid.yaml").write_text(GRID)
    args = sweep_args(mixing_bert_dir, base / "run", base / "grid.yaml")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert run_cli(*args) == 0
    return base / "run", printed.getvalue(), args


def read_summary(run: Path) -> dict:
    return json.loads((run / "sweep" / "sweep.json").read_text())


def test_sweep_json_and_the_table_agree_with_each_trials_own_fit(swept):
    run, stdout, _ = swept
    summary = read_summary(run)
    assert summary["metric"] == "val/accuracy" and summary["seeds"] == [1, 2]
    trials = summary["trials"]
    assert [(t["options"], t["seed"]) for t in trials] == [
        ({"model.learning_rate": lr}, seed) for lr in (1e-4, 1e-2) for seed in (1, 2)
    ]
    for trial in trials:
        directory = Path(trial["run_dir"])
        assert trial["state"] == "COMPLETE"
        assert trial["metric"] == json.loads((directory / "metrics.json").read_text())["val/accuracy"]
        config = yaml.safe_load((directory / "config.yaml").read_text())  # an ordinary fit, its options
        assert config["seed_everything"] == trial["seed"]
        assert config["model"]["init_args"]["learning_rate"] == trial["options"]["model.learning_rate"]
    by_config = [[t["metric"] for t in trials if t["configuration"] == c] for c in (0, 1)]
    assert len({*by_config[0], *by_config[1]}) > 1  # the seeds and rates give different scores
    for row, values in zip(summary["configurations"], by_config):
        assert row["mean"] == pytest.approx(statistics.fmean(values))
        assert row["sd"] == pytest.approx(statistics.stdev(values))
        line = next(line for line in stdout.splitlines() if line.startswith(f"  {row['configuration']}  "))
        assert all(f"{v:.4f}" in line for v in values) and f"{row['mean']:.4f} +- {row['sd']:.4f}" in line
    winner = max((0, 1), key=lambda c: statistics.fmean(by_config[c]))
    best_run = max((t for t in trials if t["configuration"] == winner), key=lambda t: t["metric"])["run_dir"]
    assert summary["best"]["configuration"] == winner and summary["best"]["run_dir"] == best_run
    link = run / "sweep" / "best.ckpt"
    assert link.resolve() == (Path(best_run) / "checkpoints" / "best.ckpt").resolve()
    assert f"best: #{winner} " in stdout
    assert (run / "sweep" / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_finished_sweep_run_again_fits_nothing(swept, capfd):
    run, _, args = swept
    before = {p: p.stat().st_mtime for p in run.glob("sweep/*/metrics.json")}
    assert run_cli(*args) == 0
    assert "sweep: trial" not in capfd.readouterr().err
    assert {p: p.stat().st_mtime for p in run.glob("sweep/*/metrics.json")} == before


@pytest.mark.parametrize(
    "grid, extra, message",
    [
        ("learning_rate: [1.0e-5]\n", [], "line 1: unknown grid key 'learning_rate'"),
        ("model.learning_rate: {low: 1.0e-5, high: 1.0e-4, lgo: true}\nsamples: 2\n", [], "unknown grid key 'lgo'"),
        ("model.dropout_rate: [0.1, 0.2]\n", [], "model.dropout_rate: not an option of configs/sst2.yaml's model"),
        ("data.batch_size: [16]\n", ["--storage", "sqlite:////no/such/dir/sweep.db"], "--storage sqlite:////no/such/dir/sweep.db: cannot be opened"),
        ("data.batch_size: [16]\n", ["--storage", "postgresql://nobody@localhost:1/none"], "cannot be opened"),
    ],
    ids=["unknown-key", "unknown-range-key", "not-an-option", "storage-path", "storage-driver"],
)  # fmt: skip
def test_bad_input_is_one_line_before_any_fit(tmp_path, capfd, grid, extra, message):
    (tmp_path / "grid.yaml").write_text(grid)
    args = ["sweep", "--config", "configs/sst2.yaml", "--grid", tmp_path / "grid.yaml", *extra]
    assert run_cli(*args, "--trainer.default_root_dir", tmp_path / "run") == 2
    err = capfd.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err
    assert not list(tmp_path.rglob("config.yaml"))  # no fit started


_FAKE_WORKER = """
import os, sys, time
from pathlib import Path
from tasks.sweep import Sweep, load_study, record_params, run_worker
from tasks.sweep_grid import Grid, cells

directory, url, log = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
grid = Grid({"model.learning_rate": [1e-5, 2e-5, 3e-5]}, {}, 0, "test")
seeds = [1, 2]
sweep = Sweep("configs/sst2.yaml", [], grid, seeds, cells(grid.configurations(), seeds), directory, url,
              "claims", "val/accuracy", "maximize", False)

def fake_fit(sweep, study, trial, cell):
    record_params(trial, sweep)
    with open(log, "a") as handle:
        handle.write(f"{cell.index} {os.getpid()}\\n")
    time.sleep(0.3)
    study.tell(trial, float(cell.index))
    return 0

sys.exit(run_worker(sweep, load_study(sweep), None, run=fake_fit))
"""


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_two_workers_on_one_study_run_every_cell_exactly_once(tmp_path, storage):
    """The claim itself (a stand-in for the fit, 6 cells): nothing run twice, nothing lost."""
    url = f"sqlite:///{tmp_path / 'sweep.db'}" if storage == "sqlite" else str(tmp_path / "sweep.journal")
    log = tmp_path / "runs.log"
    workers = [
        subprocess.Popen([sys.executable, "-c", _FAKE_WORKER, str(tmp_path), url, str(log)], cwd=ROOT,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    for worker in workers:
        assert worker.wait(timeout=120) == 0, worker.stderr.read()[-2000:]
    runs = [line.split() for line in log.read_text().splitlines()]
    assert sorted(int(cell) for cell, _ in runs) == list(range(6))  # each once, none lost
    assert len({pid for _, pid in runs}) == 2  # both workers ran cells
    trials = optuna.load_study(study_name="claims", storage=_storage(url)).trials
    complete = [t.user_attrs["cell"] for t in trials if t.state.name == "COMPLETE"]
    assert sorted(complete) == list(range(6))
    assert all(t.user_attrs.get("unused") for t in trials if t.state.name != "COMPLETE")
    assert json.loads((tmp_path / "sweep.json").read_text())["trials"][5]["metric"] == 5.0


def _storage(url: str):
    from tasks.sweep_storage import open_storage

    return open_storage(url)


def test_a_worker_killed_mid_trial_is_taken_over_and_the_sweep_ends_as_the_uninterrupted_one(
    swept, mixing_bert_dir, tmp_path, capfd
):
    """Worker A claims cell 0 and is frozen after its first checkpoint; worker B (in-process) claims
    cell 1 meanwhile, then A is killed with SIGKILL. B fails A's trial, runs cell 1 and runs cell 0
    again from its last.ckpt; every cell ends with the uninterrupted sweep's metric (seed 1 of the
    module's sweep: the same fits)."""
    uninterrupted, _, args = swept
    grid = Path(args[args.index("--grid") + 1])
    run = tmp_path / "run"
    args = sweep_args(mixing_bert_dir, run, grid, seeds="1")
    a = subprocess.Popen([sys.executable, "-m", "tasks", *args], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait_for(lambda: list(run.glob("sweep/00-*/checkpoints/last.ckpt")), a)
        os.kill(a.pid, signal.SIGSTOP)  # mid-trial: alive, holding cell 0

        def kill_once_b_claimed_cell_1() -> None:
            _wait_for(lambda: list(run.glob("sweep/01-*")), None)
            os.kill(a.pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_once_b_claimed_cell_1, daemon=True)
        killer.start()
        assert run_cli(*args) == 0
        killer.join(timeout=60)
    finally:
        a.kill()
    assert a.wait(timeout=60) == -signal.SIGKILL
    err = capfd.readouterr().err
    assert "resuming the interrupted trial from checkpoints/last.ckpt" in err
    study = optuna.load_study(study_name="sst2", storage=_storage(f"sqlite:///{run / 'sweep' / 'sweep.db'}"))
    states = sorted((t.user_attrs["cell"], t.state.name, t.number) for t in study.trials)
    assert states == [(0, "COMPLETE", 2), (0, "FAIL", 0), (1, "COMPLETE", 1)]
    uninterrupted_seed_1 = [t for t in read_summary(uninterrupted)["trials"] if t["seed"] == 1]
    expected = [(t["options"], t["seed"], t["state"], t["metric"]) for t in uninterrupted_seed_1]
    assert [
        (t["options"], t["seed"], t["state"], t["metric"]) for t in read_summary(run)["trials"]
    ] == expected


def _wait_for(condition, process, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert process is None or process.poll() is None, (
            "the worker ended before the point the test waits for"
        )
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("value, stopped", [(0.2, True), (0.9, False)])
def test_prune_stops_a_trial_below_the_median_at_its_validation(tmp_path, value, stopped):
    """``--prune true``'s callback: the main metric of each validation goes to the trial; below the
    median of 5 finished trials at that epoch, the fit stops there and the trial says where."""
    from types import SimpleNamespace

    import torch

    from tasks.sweep_pruning import ReportToStudy
    from tasks.sweep_storage import PRUNED_AT

    url = str(tmp_path / "study.journal")
    study = optuna.create_study(study_name="pruning", storage=_storage(url), direction="maximize")
    for finished in (0.5, 0.6, 0.7, 0.8, 0.9):
        trial = study.ask()
        trial.report(finished, 0)
        study.tell(trial, finished)
    trial = study.ask()
    callback = ReportToStudy(url, "pruning", trial._trial_id)
    trainer = SimpleNamespace(
        sanity_checking=False, is_global_zero=True, current_epoch=0, global_step=8, should_stop=False,
        callback_metrics={"val/accuracy": torch.tensor(value)},
        strategy=SimpleNamespace(broadcast=lambda decision, src: decision),
    )  # fmt: skip
    callback.on_validation_end(trainer, SimpleNamespace(main_metric="val/accuracy"))
    assert trainer.should_stop is stopped
    reported = study.trials[-1]
    assert reported.intermediate_values == {0: pytest.approx(value)}
    assert reported.user_attrs.get(PRUNED_AT) == ({"epoch": 0, "step": 8} if stopped else None)


def test_a_cell_another_worker_is_fitting_is_left_to_it(tmp_path, capfd):
    """Two workers that claimed one failed cell at once: the one that finds its run directory locked
    leaves it (its trial unused), without fitting."""
    from tasks.sweep import Sweep, load_study, run_trial
    from tasks.sweep_grid import Grid, cells

    grid = Grid({"model.learning_rate": [1e-5]}, {}, 0, "test")
    sweep = Sweep(
        "configs/sst2.yaml", [], grid, [1], cells(grid.configurations(), [1]), tmp_path,
        str(tmp_path / "study.journal"), "busy", "val/accuracy", "maximize", False,
    )  # fmt: skip
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom tasks.rundir import lock_run_directory\n"
         f"lock_run_directory({str(tmp_path / sweep.cells[0].name)!r}, 'fit'); print('held', flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        study = load_study(sweep)
        claimed = study.ask()
        claimed.set_user_attr("cell", 0)  # as run_worker records the claim
        assert run_trial(sweep, study, claimed, sweep.cells[0]) == 0
    finally:
        holder.kill()
        holder.wait()
    (trial,) = study.trials
    assert trial.state.name == "FAIL" and trial.user_attrs["unused"] is True
    assert "is in use by fit" in capfd.readouterr().err
    assert not (tmp_path / sweep.cells[0].name / "config.yaml").exists()  # nothing fitted
