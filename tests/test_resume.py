"""kill -9 costs minutes, not the run: a fit killed mid-epoch and resumed with ``--ckpt_path last``
ends with the weights and metrics.json of the uninterrupted run (same seed, CPU: identical)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import FAST_TRAINER_ARGS as FAST
from .conftest import ROOT

pytestmark = pytest.mark.multiprocess

# The SST-2 sample: 64 sentences, batches of 8 -> 8 steps an epoch; 2 epochs, dropout on.
FIT = ["fit", "--config", "configs/sst2.yaml", "--trainer.max_epochs", "2", "--checkpoint_every_n_steps", "2"]


def fit(run_dir: Path, pretrained: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [*FIT, "--model.pretrained", str(pretrained), "--trainer.default_root_dir", str(run_dir), *FAST]
    return subprocess.run(
        [sys.executable, "-m", "tasks", *args, *extra], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)[
        "state_dict"
    ]


@pytest.fixture(scope="module")
def uninterrupted(mixing_bert_dir: Path, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("resume") / "uninterrupted"
    result = fit(run_dir, mixing_bert_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir


def test_killed_mid_epoch_and_resumed_equals_the_uninterrupted_run(uninterrupted, mixing_bert_dir, tmp_path):
    run_dir = tmp_path / "killed"
    killer = ["--trainer.callbacks+=tests.killer.KillAtStep", "--trainer.callbacks.step=11"]
    killed = fit(run_dir, mixing_bert_dir, *killer)
    assert killed.returncode == -9  # SIGKILL, in the middle of the second epoch
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (1, 10)  # the newest of the every-2-steps checkpoints
    assert not (run_dir / "metrics.json").exists()  # a dead run does not look finished

    resumed = fit(run_dir, mixing_bert_dir, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected, got = weights(uninterrupted), weights(run_dir)
    assert expected.keys() == got.keys()
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    resumed_metrics, expected_metrics = (
        json.loads((d / "metrics.json").read_text()) for d in (run_dir, uninterrupted)
    )
    for metrics in (resumed_metrics, expected_metrics):
        metrics["best_checkpoint"].pop("path")  # each run's own directory
    assert resumed_metrics == expected_metrics


def test_the_same_config_and_seed_twice_give_the_same_metrics(uninterrupted, mixing_bert_dir, tmp_path):
    again = fit(tmp_path / "again", mixing_bert_dir)
    assert again.returncode == 0, again.stderr[-2000:]
    first, second = (
        json.loads((d / "metrics.json").read_text()) for d in (uninterrupted, tmp_path / "again")
    )
    assert first["best_checkpoint"].pop("path") != second["best_checkpoint"].pop("path")
    assert first == second


@pytest.mark.parametrize("fraction", [0.4, 1.0], ids=["mid-write", "before-rename"])
def test_killed_during_a_checkpoint_save_on_another_filesystem_resumes_to_the_same_result(
    uninterrupted, mixing_bert_dir, tmp_path, fraction
):
    """The run directory on a tmpfs (not $TMPDIR's filesystem, where Lightning's own save would
    copy over the target): kill -9 inside the save of last.ckpt at step 10 leaves the step-8 one
    whole, and resuming from it ends where the uninterrupted run ended."""
    from .conftest import mounted_tmpfs

    with mounted_tmpfs(tmp_path / "tmpfs") as mount:
        run_dir = mount / "killed"
        killer = ["--trainer.callbacks+=tests.killer.KillDuringSave", "--trainer.callbacks.step=10"]
        killed = fit(run_dir, mixing_bert_dir, *killer, f"--trainer.callbacks.fraction={fraction}")
        assert killed.returncode == -9, killed.stderr[-2000:]
        last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert last["global_step"] == 8  # the previous save (the end of epoch 0), whole
        leftovers = list((run_dir / "checkpoints").glob(".last.ckpt.*.tmp"))
        assert leftovers, "the killed save's temp file should be there, beside its target"

        resumed = fit(run_dir, mixing_bert_dir, "--ckpt_path", "last")
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert "partial file of a run that was killed" in resumed.stderr
        assert not list((run_dir / "checkpoints").glob(".*.tmp"))
        expected, got = weights(uninterrupted), weights(run_dir)
        assert all(torch.equal(expected[name], got[name]) for name in expected)
        resumed_metrics, expected_metrics = (
            json.loads((d / "metrics.json").read_text()) for d in (run_dir, uninterrupted)
        )
        for metrics in (resumed_metrics, expected_metrics):
            metrics["best_checkpoint"].pop("path")
        assert resumed_metrics == expected_metrics
