"""The newcomer's path through the command line: help, choosing a config, short fits, run directories."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import FAST_TRAINER_ARGS as FAST
from .conftest import ROOT, run_cli


def python_m_tasks(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tasks", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_subprocesses_cache_features_in_the_sessions_directory_not_the_users():
    """conftest points the datasets cache at a temp directory of this test session; subprocesses
    (``python -m tasks`` among them) inherit it through the environment."""
    code = "import datasets.config; print(datasets.config.HF_DATASETS_CACHE)"  # the data modules' default
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    cache = Path(result.stdout.strip())
    assert cache == Path(os.environ["HF_DATASETS_CACHE"]) and cache.is_relative_to(os.environ["HF_HOME"])
    assert not cache.is_relative_to(Path.home() / ".cache")


def test_help_lists_every_command_with_a_line_and_the_shipped_configs():
    result = python_m_tasks("--help")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    for command in ("fit", "validate", "test", "predict", "score-squad", "report"):
        (line,) = [line for line in lines if line.split()[:1] == [command]]
        assert len(line.split()) > 3  # a line of help after the name
    assert "configs/sst2.yaml" in result.stdout and "configs/ner.yaml" in result.stdout


def test_a_command_without_a_config_says_how_to_choose_one():
    result = python_m_tasks("fit")
    assert result.returncode == 2
    assert "--config configs/<name>.yaml" in result.stderr and "configs/squad.yaml" in result.stderr
    assert "required" not in result.stderr and len(result.stderr.splitlines()) <= 3


@pytest.mark.parametrize(
    "command, preset, expected", [("predict", None, "0"), ("validate", "64", "64"), ("fit", None, None)]
)
def test_evaluation_commands_turn_off_onednn_primitive_cache_unless_the_user_set_it(
    command, preset, expected, monkeypatch
):
    """Token-budget batches come in many shapes: oneDNN's cache of one primitive per shape held
    about 170 MB of predict's peak RSS. fit keeps the cache; a user's own setting wins."""
    from tasks import cli

    name = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
    monkeypatch.setenv(name, "placeholder")  # so that teardown restores the variable as it was
    if preset is None:
        monkeypatch.delenv(name)
    else:
        monkeypatch.setenv(name, preset)
    assert cli.main([command]) == 2  # no config: refused after the environment is set
    assert os.environ.get(name) == expected


def test_help_with_a_config_shows_that_tasks_data_options(capsys):
    assert run_cli("fit", "--config", "configs/ner.yaml", "--help") == 0
    out = capsys.readouterr().out
    assert "--trainer.max_epochs" in out  # the command's own options
    assert "tasks.tagging.TaggingDataModule" in out
    for option in ("--data.tag_scheme", "--data.document_context", "--data.label_all_tokens"):
        assert option in out


@pytest.fixture(scope="module")
def short_run(tiny_bert_dir: Path, tmp_path_factory) -> Path:
    """A fit stopped by max_steps inside its first epoch (the sample has 8 batches of 8)."""
    run_dir = tmp_path_factory.mktemp("short") / "run"
    options = (
        "--config",
        "configs/sst2.yaml",
        "--model.pretrained",
        tiny_bert_dir,
        "--trainer.default_root_dir",
    )
    assert run_cli("fit", *options, run_dir, "--trainer.max_steps", "2", *FAST) == 0
    return run_dir


def test_a_fit_shorter_than_an_epoch_validates_and_writes_checkpoints_and_metrics(short_run: Path):
    assert (short_run / "checkpoints" / "best.ckpt").is_file()
    assert (short_run / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((short_run / "metrics.json").read_text())
    assert set(metrics) == {
        "val/accuracy",
        "val/loss",
        "val/evaluated_examples",
        "val/total_examples",
        "best_checkpoint",
        "input_lengths",
    }
    assert metrics["val/evaluated_examples"] == metrics["val/total_examples"] > 0  # the whole dev set
    assert metrics["best_checkpoint"]["step"] == 2
    assert 0.0 <= metrics["val/accuracy"] <= 1.0
    assert sorted(p.name for p in (short_run / "logs" / "csv").iterdir()) == ["fit"]  # one log version


def test_keep_last_ckpt_false_removes_last_ckpt_once_the_fit_completes(
    tiny_bert_dir: Path, tmp_path: Path, capfd
):
    options = (
        "--config",
        "configs/sst2.yaml",
        "--model.pretrained",
        tiny_bert_dir,
        "--trainer.max_steps",
        "1",
    )
    run_dir = tmp_path / "run"
    capfd.readouterr()
    args = ("--trainer.default_root_dir", run_dir, "--checkpoint_every_n_steps", "1", *FAST)
    assert run_cli("fit", *options, *args, "--keep_last_ckpt", "false") == 0
    err = capfd.readouterr().err.rstrip().splitlines()
    assert f"note: removed {run_dir / 'checkpoints' / 'last.ckpt'} (--keep_last_ckpt false)" in err[-2]
    # the closing line: every file the fit wrote, and no last.ckpt
    assert (
        err[-1]
        == f"wrote {run_dir}/ (checkpoints/best.ckpt, config.yaml, confusion_matrix.json, logs/, metrics.json)"
    )
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt"]
    assert json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]["step"] == 1


def test_best_checkpoint_holds_weights_and_the_model_recipe_but_no_optimizer(short_run: Path):
    best = torch.load(short_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    last = torch.load(short_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert "optimizer_states" not in best and "optimizer_states" in last
    assert {"bert_config", "vocab", "do_lower_case"} <= set(best["bert_tasks"])
    assert best["hyper_parameters"]["label_names"] == ["0", "1"]
    # AdamW keeps two moments per weight: last.ckpt is about three times the size of best.ckpt
    best_size = (short_run / "checkpoints" / "best.ckpt").stat().st_size
    assert (short_run / "checkpoints" / "last.ckpt").stat().st_size > 2.5 * best_size


def test_a_second_fit_into_a_run_directory_refuses_unless_told(short_run: Path, tiny_bert_dir: Path, capsys):
    options = ("--config", "configs/sst2.yaml", "--model.pretrained", tiny_bert_dir)
    before = (short_run / "checkpoints" / "best.ckpt").stat().st_mtime_ns
    assert run_cli("fit", *options, "--trainer.default_root_dir", short_run, *FAST) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(short_run) in error and "--overwrite true" in error and "--ckpt_path last" in error
    assert (short_run / "checkpoints" / "best.ckpt").stat().st_mtime_ns == before  # untouched
    # resuming the same run continues it: last.ckpt is at step 2, max_steps 4 trains 2 more
    resume = (
        "--trainer.default_root_dir",
        short_run,
        "--ckpt_path",
        "last",
        "--trainer.max_steps",
        "4",
        *FAST,
    )
    assert run_cli("fit", *options, *resume) == 0
    last = torch.load(short_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 4


def test_overwrite_starts_over(tiny_bert_dir: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    options = (
        "--config",
        "configs/sst2.yaml",
        "--model.pretrained",
        tiny_bert_dir,
        "--trainer.default_root_dir",
    )
    assert run_cli("fit", *options, run_dir, "--trainer.max_steps", "1", *FAST) == 0
    (run_dir / "metrics.json").write_text('{"val/accuracy": 99}')  # would be a stale number
    assert run_cli("fit", *options, run_dir, "--trainer.max_steps", "1", "--overwrite", "true", *FAST) == 0
    assert json.loads((run_dir / "metrics.json").read_text())["val/accuracy"] <= 1.0


def test_resuming_without_a_last_checkpoint_is_a_clear_error(tiny_bert_dir: Path, tmp_path: Path, capsys):
    options = ("--config", "configs/sst2.yaml", "--model.pretrained", tiny_bert_dir)
    assert run_cli("fit", *options, "--trainer.default_root_dir", tmp_path, "--ckpt_path", "last", *FAST) == 2
    assert "no " + str(tmp_path / "checkpoints" / "last.ckpt") in capsys.readouterr().err


def test_outputs_get_the_usual_permissions(short_run: Path, tmp_path: Path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "predict" / "test" / "predictions.jsonl"  # the config's predict_file: test.tsv
        checkpoint = short_run / "checkpoints" / "best.ckpt"
        args = (
            "--config",
            "configs/sst2.yaml",
            "--ckpt_path",
            checkpoint,
            "--trainer.default_root_dir",
            tmp_path,
        )
        assert run_cli("predict", *args, *FAST) == 0
        exported = tmp_path / "hf"
        assert run_cli("export", "--ckpt_path", checkpoint, "--format", "hf", "--output", exported) == 0
    finally:
        os.umask(old)
    for path in (out, out.parent / "SST-2.tsv", *sorted(exported.iterdir())):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_gradients_are_clipped_at_norm_one_by_default(tiny_bert_dir: Path, tmp_path: Path):
    from tasks.cli import BertTasksCLI

    args = ["--config", "configs/sst2.yaml", "--model.pretrained", str(tiny_bert_dir)]
    cli = BertTasksCLI(args=[*args, "--trainer.default_root_dir", str(tmp_path)], run=False)
    assert cli.trainer.gradient_clip_val == 1.0  # Google's BERT recipe
    override = [*args, "--trainer.gradient_clip_val", "0.5", "--trainer.default_root_dir", str(tmp_path)]
    assert BertTasksCLI(args=override, run=False).trainer.gradient_clip_val == 0.5


def test_a_task_checkpoint_as_pretrained_starts_from_its_encoder(short_run: Path):
    """Intermediate-task transfer (MNLI -> RTE): the encoder comes with its fine-tuned weights."""
    from tasks.module import TaskModule

    checkpoint = short_run / "checkpoints" / "best.ckpt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    module = TaskModule(pretrained=str(checkpoint))
    for name, tensor in module.encoder.state_dict().items():
        assert torch.equal(tensor, state[f"encoder.{name}"]), name


def test_googles_checkpoint_prefix_is_a_pretrained_source_not_a_task_checkpoint(tiny_tf_dir: Path):
    from tasks.checkpoint import is_task_checkpoint
    from tasks.module import TaskModule

    prefix = tiny_tf_dir / "bert_model.ckpt"
    assert not is_task_checkpoint(prefix) and is_task_checkpoint("outputs/sst2/checkpoints/best.ckpt")
    module = TaskModule(pretrained=str(prefix))
    assert module.encoder.config.hidden_size == 64  # the fixture's weights, not a random model
    assert module._tokenizer_payload["do_lower_case"] is True
