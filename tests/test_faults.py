"""The README's promises under faults: no file chooses code, saves survive any filesystem and a full
disk, one run per directory, outputs never overwrite inputs, one-line errors from every command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tasks.io import UserError, atomic_open

from .conftest import FAST_TRAINER_ARGS, ROOT, mounted_tmpfs
from .test_bad_inputs import error_problems, invoke

SAMPLE = ROOT / "data" / "glue" / "SST-2"


@pytest.fixture(autouse=True)
def in_repository(monkeypatch):
    monkeypatch.chdir(ROOT)


def expect_one_line(capfd, args, fragments: list[str]) -> str:
    code, err = invoke(capfd, *args)
    problems = error_problems(code, err, fragments)
    assert not problems, f"{problems}\n{err[-3000:]}"
    return err


def predict_args(ckpt: Path, run_dir: Path, *extra) -> list:
    return [
        "predict",
        "--ckpt_path",
        ckpt,
        "--data.predict_file",
        SAMPLE / "test.tsv",
        "--trainer.default_root_dir",
        run_dir,
        *FAST_TRAINER_ARGS,
        *extra,
    ]


def crafted(source: Path, target: Path, change) -> Path:
    """A copy of checkpoint ``source`` with ``change(checkpoint)`` applied, saved at ``target``."""
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    change(checkpoint)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, target)
    return target


# --- a file never chooses or runs code -----------------------------------------------------------


class _MakesDirectory:
    """Unpickling this calls os.mkdir(path): what a malicious checkpoint would do."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_a_checkpoint_naming_a_foreign_callable_runs_nothing(sst2_teacher_ckpt, tmp_path, capfd, monkeypatch):
    """A checkpoint whose stored class path names code of the attacker's (an importable module that
    leaves a sentinel when imported or called): predict, export, prune and distillation refuse it,
    and nothing is imported."""
    sentinel = tmp_path / "sentinel"
    module = tmp_path / "payload" / "evil_module.py"
    module.parent.mkdir()
    module.write_text(
        "from pathlib import Path\n"
        f"Path({str(sentinel)!r} + '.imported').touch()\n"
        f"def Model(**kwargs):\n    Path({str(sentinel)!r} + '.called').touch()\n"
    )
    monkeypatch.syspath_prepend(str(module.parent))

    def foreign(checkpoint):
        checkpoint["bert_tasks"].pop("task_kind", None)
        checkpoint["hyper_parameters"]["_class_path"] = "evil_module.Model"

    evil = crafted(sst2_teacher_ckpt, tmp_path / "evil.ckpt", foreign)
    out = tmp_path / "out"
    for args in (
        predict_args(evil, out),
        ["export", "--ckpt_path", evil, "--format", "hf", "--output", out / "hf"],
        ["prune", "--ckpt_path", evil, "--drop_layers", "1", "--output", out / "p.ckpt"],
        [
            "fit",
            "--config",
            "configs/distill_sst2.yaml",
            "--model.teacher",
            evil,
            "--trainer.max_steps",
            "1",
            "--trainer.default_root_dir",
            out / "distill",
            *FAST_TRAINER_ARGS,
        ],  # fmt: skip
    ):
        expect_one_line(capfd, args, ["does not name one of this app's task kinds", "never imported"])
    assert not list(tmp_path.glob("sentinel*")), "code named by the checkpoint ran"

    def unknown_kind(checkpoint):
        checkpoint["bert_tasks"]["task_kind"] = "evil_module.Model"

    unknown = crafted(sst2_teacher_ckpt, tmp_path / "unknown.ckpt", unknown_kind)
    expect_one_line(capfd, predict_args(unknown, out), ["names task kind 'evil_module.Model'"])
    assert not list(tmp_path.glob("sentinel*"))


def test_a_pickle_in_a_checkpoint_never_runs_even_when_the_environment_allows_it(
    sst2_teacher_ckpt, mixing_bert_dir, tmp_path, capfd, monkeypatch
):
    """torch's TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 turns weights_only off where a caller did not ask
    for it: every read of ours asks, resuming a fit included (Lightning's own read did not)."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    sentinel = tmp_path / "sentinel"
    checkpoint = torch.load(sst2_teacher_ckpt, map_location="cpu", weights_only=True)
    checkpoint["surprise"] = _MakesDirectory(str(sentinel))
    evil = tmp_path / "evil.ckpt"
    torch.save(checkpoint, evil)

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(evil, run_dir / "checkpoints" / "last.ckpt")
    fit = ["fit", "--config", "configs/sst2.yaml", "--model.pretrained", mixing_bert_dir]
    for args in (
        predict_args(evil, tmp_path / "out"),
        ["export", "--ckpt_path", evil, "--format", "hf", "--output", tmp_path / "hf"],
        ["prune", "--ckpt_path", evil, "--drop_layers", "1", "--output", tmp_path / "p.ckpt"],
        [*fit, "--ckpt_path", "last", "--trainer.default_root_dir", run_dir, *FAST_TRAINER_ARGS],
        [*fit, "--ckpt_path", evil, "--trainer.default_root_dir", tmp_path / "other", *FAST_TRAINER_ARGS],
    ):
        expect_one_line(capfd, args, ["never unpickled"])
        assert not sentinel.exists(), f"the pickle ran under {args[0]}"

    from tasks.checkpoint_io import AtomicCheckpointIO

    with pytest.raises(UserError, match="never unpickled"):
        AtomicCheckpointIO().load_checkpoint(evil, weights_only=False)  # what Lightning hands it
    assert not sentinel.exists()


# --- broken checkpoints: one line each ---------------------------------------------------------


def test_broken_checkpoints_are_one_line_errors(sst2_teacher_ckpt, mixing_bert_dir, tmp_path, capfd):
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(parents=True)
    fit = [
        "fit",
        "--config",
        "configs/sst2.yaml",
        "--model.pretrained",
        mixing_bert_dir,
        "--ckpt_path",
        "last",
    ]
    fit += ["--trainer.default_root_dir", run_dir, *FAST_TRAINER_ARGS]
    whole = sst2_teacher_ckpt.read_bytes()
    for content in (b"", whole[: len(whole) // 2]):  # empty, truncated
        (checkpoints / "last.ckpt").write_bytes(content)
        expect_one_line(capfd, fit, [str(checkpoints / "last.ckpt"), "cannot read the checkpoint"])
        truncated = tmp_path / "truncated.ckpt"
        truncated.write_bytes(content)
        expect_one_line(capfd, predict_args(truncated, tmp_path / "p"), ["truncated.ckpt"])
        expect_one_line(
            capfd, ["prune", "--ckpt_path", truncated, "--drop_layers", "1", "--output", tmp_path / "x.ckpt"],
            ["truncated.ckpt", "cannot read"],
        )  # fmt: skip

    def three_labels(checkpoint):
        checkpoint["hyper_parameters"]["label_names"] = ["0", "1", "2"]

    heads = crafted(sst2_teacher_ckpt, tmp_path / "heads.ckpt", three_labels)
    expect_one_line(capfd, predict_args(heads, tmp_path / "p"), ["heads.ckpt", "do not fit", "size mismatch"])

    def no_vocab(checkpoint):
        del checkpoint["bert_tasks"]["vocab"]

    lacking = crafted(sst2_teacher_ckpt, tmp_path / "lacking.ckpt", no_vocab)
    expect_one_line(
        capfd, predict_args(lacking, tmp_path / "p"), ["lacking.ckpt", "lacks 'bert_tasks.vocab'"]
    )
    expect_one_line(capfd, predict_args(tmp_path, tmp_path / "p"), [str(tmp_path), "directory"])


# --- one run per directory -----------------------------------------------------------------------


def test_two_fits_into_one_run_directory(mixing_bert_dir, tmp_path, capfd):
    """A second fit into a directory a running fit holds refuses, naming the holder; the first
    finishes as if alone."""
    run_dir = tmp_path / "run"
    args = ["fit", "--config", "configs/sst2.yaml", "--model.pretrained", str(mixing_bert_dir)]
    args += ["--trainer.max_epochs", "2", "--trainer.default_root_dir", str(run_dir), *FAST_TRAINER_ARGS]
    first = subprocess.Popen(
        [sys.executable, "-m", "tasks", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / ".lock").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (run_dir / ".lock").exists(), "the first fit never locked its run directory"
        expect_one_line(capfd, args, [str(run_dir), "in use by fit", f"pid {first.pid}"])
        out, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err[-2000:]
    assert (run_dir / "metrics.json").is_file() and (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert not (run_dir / ".lock").exists()  # released with the command


def test_a_dead_runs_lock_is_taken_over(tmp_path, capfd):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from tasks.rundir import lock_run_directory; "
         f"lock_run_directory({str(run_dir)!r}, 'validate'); print('locked', flush=True); time.sleep(600)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        from tasks.rundir import lock_run_directory

        with pytest.raises(UserError, match=rf"in use by validate \(pid {holder.pid} on "):
            lock_run_directory(run_dir, "fit")
    finally:
        holder.kill()
        holder.wait()
    (run_dir / f".metrics.json.{holder.pid}@{os.uname().nodename.split('.')[0]}.abc.tmp").write_text("{")
    capfd.readouterr()
    lock = lock_run_directory(run_dir, "fit")
    err = capfd.readouterr().err
    assert f"pid {holder.pid}" in err and "taking it over" in err and "partial file" in err
    assert not list(run_dir.glob(".*.tmp"))
    lock.release()
    assert not (run_dir / ".lock").exists()


# --- saves: full disk, read-only, outputs over inputs --------------------------------------------


def test_a_full_disk_keeps_the_previous_file(tmp_path):
    from tasks.checkpoint_io import AtomicCheckpointIO

    with mounted_tmpfs(tmp_path / "small", size="1m") as disk:
        target = disk / "last.ckpt"
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(10)}}, target)
        before = target.read_bytes()
        with pytest.raises(
            UserError, match=r"last.ckpt: cannot be written \(no space left on the device\); the previous"
        ):
            AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(1 << 20)}}, target)
        assert target.read_bytes() == before and os.listdir(disk) == ["last.ckpt"]
        with pytest.raises(UserError, match="no space left"), atomic_open(disk / "new.txt") as handle:
            handle.write("x" * (2 << 20))
        assert os.listdir(disk) == ["last.ckpt"]


def test_predict_on_a_full_disk_or_read_only_directory(sst2_teacher_ckpt, tmp_path, capfd):
    with mounted_tmpfs(tmp_path / "disk", size="1m") as disk:
        filler = disk / "filler"
        with open(filler, "wb") as handle:  # leave about 2 KB free: less than the predictions need
            try:
                handle.write(b"\0" * (1 << 20))
            except OSError:
                pass
        filler.write_bytes(filler.read_bytes()[:-2048])
        predictions = disk / "predictions.jsonl"
        err = expect_one_line(
            capfd,
            predict_args(sst2_teacher_ckpt, tmp_path / "run", "--data.predictions_file", predictions),
            [str(predictions), "no space left"],
        )
        assert "Traceback" not in err and sorted(os.listdir(disk)) == ["filler"]
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        expect_one_line(
            capfd,
            predict_args(sst2_teacher_ckpt, tmp_path / "run", "--data.predictions_file", predictions),
            [str(predictions), "not writable"],
        )
        expect_one_line(capfd, predict_args(sst2_teacher_ckpt, disk / "run"), ["run directory", "read-only"])
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("x")
    expect_one_line(capfd, predict_args(sst2_teacher_ckpt, not_a_directory), ["a file, not a directory"])


def test_outputs_never_overwrite_inputs(sst2_teacher_ckpt, tmp_path, capfd):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    shutil.copy(sst2_teacher_ckpt, ckpt)
    before = ckpt.read_bytes()
    for output in (run_dir, run_dir / "checkpoints", ckpt):
        expect_one_line(
            capfd,
            ["export", "--ckpt_path", ckpt, "--format", "hf", "--output", output, "--overwrite"],
            ["input"],
        )
    expect_one_line(
        capfd, ["prune", "--ckpt_path", ckpt, "--drop_layers", "1", "--output", ckpt], ["input", str(ckpt)]
    )
    expect_one_line(
        capfd, predict_args(ckpt, tmp_path / "out", "--data.predictions_file", ckpt), ["input", str(ckpt)]
    )
    assert ckpt.read_bytes() == before


# --- kill -9 during predict ----------------------------------------------------------------------


def test_killed_predict_leaves_the_previous_predictions_and_the_next_run_cleans_up(
    sst2_teacher_ckpt, tmp_path
):
    run_dir = tmp_path / "run"
    args = [str(a) for a in predict_args(sst2_teacher_ckpt, run_dir, "--data.eval_batch_size", "4")]

    def predict(*extra):
        return subprocess.run(
            [sys.executable, "-m", "tasks", *args, *extra],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )

    first = predict()
    assert first.returncode == 0, first.stderr[-2000:]
    predictions = run_dir / "predict" / "test" / "predictions.jsonl"  # the checkpoint's run's predict folder
    complete = predictions.read_bytes()
    killed = predict("--trainer.callbacks+=tests.killer.KillAtPredictBatch", "--trainer.callbacks.batch=1")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert predictions.read_bytes() == complete  # the previous file, whole
    assert list(predictions.parent.glob(".predictions.jsonl.*.tmp")), (
        "the killed run's temp file should be there"
    )
    again = predict()
    assert again.returncode == 0, again.stderr[-2000:]
    assert not list(predictions.parent.glob(".*.tmp")) and "partial file" in again.stderr
    assert predictions.read_bytes() == complete
