"""Help and the refusals that need no model, answered before Lightning is imported (seconds saved
on every command), and paths in a config resolved against the config's directory too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import FAST_TRAINER_ARGS as FAST
from .conftest import ROOT, run_cli


@pytest.fixture(autouse=True)
def in_repository(monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs name their data files relative to the repository


def test_help_and_the_up_front_refusals_do_not_import_lightning(tmp_path):
    """Each call's exit status, then whether Lightning (or torch) was imported, in a fresh process."""
    busy = tmp_path / "busy"
    (busy / "checkpoints").mkdir(parents=True)
    (busy / "metrics.json").write_text("{}\n")
    calls = [
        ["fit", "--config", "configs/sst2.yaml", "--help"],
        ["fit", "--model.help", "SequenceClassifier"],
        ["validate", "--help"],
        ["fit", "--config", "configs/sst2.yaml", "--trainer.default_root_dir", str(busy)],
        ["fit", "--config", "configs/sst2.yaml", "--data.train_file", str(tmp_path / "nope.tsv")],
        ["validate", "--config", "configs/sst2.yaml", "--ckpt_path", str(tmp_path / "nope.ckpt")],
        ["predict", "--ckpt_path", str(tmp_path / "nope.ckpt")],
        ["fit", "--config", "configs/nope.yaml"],
    ]
    code = (
        "import json, sys\nfrom tasks.cli import main\n"
        f"codes = [main(args) for args in {calls!r}]\n"
        "print(json.dumps([codes, 'lightning' in sys.modules, 'torch' in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    codes, lightning, torch = json.loads(result.stdout.strip().splitlines()[-1])
    assert codes == [0, 0, 0, 2, 2, 2, 2, 2]
    assert not lightning and not torch
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {busy} already holds a run (checkpoints, metrics.json): pass --overwrite true to replace it, "
        "--ckpt_path last to resume it, or --trainer.default_root_dir DIR for a new one",
        f"error: {tmp_path / 'nope.tsv'}: file not found",
        f"error: --ckpt_path {tmp_path / 'nope.ckpt'}: checkpoint not found",
        f"error: --ckpt_path {tmp_path / 'nope.ckpt'}: checkpoint not found",
        "error: --config configs/nope.yaml: file not found",
    ]


def option_block(out: str, flag: str) -> str:
    """The help entry of ``flag``: its line and the indented lines under it."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [flag])
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("        ")), len(lines))
    return " ".join(line.strip() for line in lines[start:end])


def test_help_with_a_config_shows_its_values_as_the_defaults_and_the_models_options(capsys):
    assert run_cli("fit", "--config", "configs/sst2.yaml", "--help") == 0
    out = capsys.readouterr().out
    assert "default: 8)" in option_block(out, "--data.batch_size")  # the config's, not the class's 32
    assert "default: 5)" in option_block(out, "--trainer.max_epochs")
    assert "default: 42)" in option_block(out, "--seed_everything")
    assert "default: 1.0)" in option_block(out, "--trainer.gradient_clip_val")  # the app's default
    assert "default: 0.0)" in option_block(out, "--model.hidden_dropout_prob") or "default: null)" in (
        option_block(out, "--model.hidden_dropout_prob")
    )
    # the model's options beside the data's, documented from the classes' docstrings
    assert "tasks.classification.SequenceClassifier (--model.<name>)" in out
    assert "training batch size" in option_block(out, "--data.batch_size")
    for flag in ("--model.learning_rate", "--model.classifier_dropout", "--model.quantize", "--overwrite"):
        assert option_block(out, flag)
    assert "default: 5e-05)" in option_block(out, "--model.learning_rate")
    # linked options are the CLI's to set, not listed as options
    assert "--model.task " not in out and "--data.tokenizer " not in out


def test_a_command_line_value_is_the_default_shown(capsys):
    assert run_cli("fit", "--config", "configs/ner.yaml", "--data.batch_size", "3", "--help") == 0
    out = capsys.readouterr().out
    assert "default: 3)" in option_block(out, "--data.batch_size")
    assert option_block(out, "--data.tag_scheme") and "tasks.tagging.TaggingModule" in out


def test_a_distilled_model_lists_its_own_options_and_its_task_models(capsys):
    """Options are followed through ``**kwargs`` to the bases, the first declaration winning."""
    assert run_cli("fit", "--model.help", "DistilledClassifier") == 0
    out = capsys.readouterr().out
    for flag in (
        "--model.teacher",
        "--model.temperature",
        "--model.classifier_dropout",
        "--model.learning_rate",
    ):
        assert option_block(out, flag)
    assert "default: null)" in option_block(out, "--model.pretrained")  # Distillation's, not TaskModule's


def test_short_class_names_are_accepted(capsys):
    assert run_cli("fit", "--model.help", "SequenceClassifier") == 0
    short = capsys.readouterr().out
    assert run_cli("fit", "--model.help", "tasks.classification.SequenceClassifier") == 0
    assert capsys.readouterr().out == short and "--model.classifier_dropout" in short
    assert run_cli("fit", "--data.help", "QADataModule") == 0
    assert "--data.doc_stride" in capsys.readouterr().out
    assert run_cli("fit", "--model.help", "Classifier") == 2
    error = capsys.readouterr().err
    assert "--model.help Classifier: not a model class" in error and "SequenceClassifier" in error


def printed_config(capsys, *args) -> str:
    """``fit ARGS --print_config``'s output (jsonargparse prints it and exits 0)."""
    with pytest.raises(SystemExit) as exit_:
        run_cli("fit", *args, "--print_config")
    assert exit_.value.code in (0, None)
    return capsys.readouterr().out


def test_print_config_shows_the_run_directory(capsys):
    assert "default_root_dir: outputs/sst2" in printed_config(capsys, "--config", "configs/sst2.yaml")


def config_beside_its_data(directory: Path, train_name: str = "train.tsv") -> Path:
    """configs/sst2.yaml in ``directory``, naming data files relative to it (data/*.tsv)."""
    (directory / "data").mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):
        (directory / "data" / name).write_bytes((ROOT / "data" / "glue" / "SST-2" / name).read_bytes())
    text = (ROOT / "configs" / "sst2.yaml").read_text(encoding="utf-8")
    text = text.replace("data/glue/SST-2/train.tsv", f"data/{train_name}").replace(
        "data/glue/SST-2/", "data/"
    )
    config = directory / "my.yaml"
    config.write_text(text, encoding="utf-8")
    return config


def test_config_paths_not_in_the_working_directory_resolve_against_the_config(tmp_path, capsys):
    config = config_beside_its_data(tmp_path / "project")
    out = printed_config(capsys, "--config", config)
    assert f"train_file: {config.parent / 'data' / 'train.tsv'}" in out
    assert f"validation_file: {config.parent / 'data' / 'dev.tsv'}" in out
    # a command-line value is the working directory's, and wins
    out = printed_config(capsys, "--config", config, "--data.train_file", "data/glue/SST-2/train.tsv")
    assert "train_file: data/glue/SST-2/train.tsv" in out


def test_a_config_path_found_nowhere_names_both_places_tried(tmp_path, capsys):
    config = config_beside_its_data(tmp_path / "project", train_name="nope.tsv")
    assert run_cli("fit", "--config", config) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == (
        f"error: {config}: data.train_file 'data/nope.tsv' not found "
        f"(tried ./data/nope.tsv and {config.parent / 'data' / 'nope.tsv'})"
    )


def test_a_fit_that_fails_after_the_trainer_started_leaves_no_logs(tiny_bert_dir, tmp_path, capsys):
    """A train file that is bad inside (found when the data is read): no logs/ in a run directory
    that held nothing before; one made for the run is removed, one the user made is kept, empty."""
    bad = tmp_path / "train.tsv"
    bad.write_text("sentence\tlabel\na fine film\t1\nno label here\n", encoding="utf-8")
    made = tmp_path / "made"
    made.mkdir()
    for run_dir in (tmp_path / "fresh", made):
        args = (
            "--config",
            "configs/sst2.yaml",
            "--model.pretrained",
            tiny_bert_dir,
            "--data.train_file",
            bad,
        )
        assert run_cli("fit", *args, "--trainer.default_root_dir", run_dir, *FAST) == 2
        assert "expected 2 tab-separated columns" in capsys.readouterr().err
    assert not (tmp_path / "fresh").exists()
    assert made.is_dir() and not list(made.iterdir())
