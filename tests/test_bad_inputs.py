"""Malformed inputs as a new user produces them, through the real command line.

Every case exits with status 2 and ends stderr with a short message (at most 4 lines) starting with
``error: `` that names the file and the line, field or example (or the option) and what is wrong;
no traceback; and no output file that looks complete: no new checkpoint, metrics, predictions or
submission file, and files an earlier run left in the run directory unchanged.

Most cases fail before any training. One small checkpoint per task (``--trainer.max_steps 1`` on
the shipped samples) is fitted once for the module.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from .conftest import FAST_TRAINER_ARGS as FAST
from .conftest import ROOT, run_cli

# Run in-process, LightningCLI warns that pytest's own sys.argv is there too.
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter:UserWarning")

# Short SQuAD windows: the sample's paragraphs then fit a 64-token model input quickly.
QA_WINDOWS = ("--data.max_seq_length", "64", "--data.max_query_length", "24", "--data.doc_stride", "24")

# What an earlier evaluation or prediction left in a run directory: a failed command must keep them.
EARLIER = {
    "metrics.json": '{"val/accuracy": 0.25, "val/loss": 0.5}\n',
    "predictions.jsonl": '{"line": 1, "index": "0", "text": "earlier", "label": "positive"}\n',
    "predictions.json": '{"ardin-a": "1903"}\n',
}
# Files that look like a finished run's outputs (logs and the saved config are not among them).
OUTPUT_NAMES = {
    "metrics.json",
    "predictions.jsonl",
    "predictions.json",
    "predictions.conll",
    "nbest_predictions.json",
    "null_odds.json",
    "confusion_matrix.json",
}


@pytest.fixture(autouse=True)
def in_repository(monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs name their data files relative to the repository


# --- running a case and checking the contract ---------------------------------------------------


def invoke(capfd, *args) -> tuple[int, str]:
    """``python -m tasks ARGS`` in-process: (exit status, stderr). An exception that escapes ``main``
    is what ``python -m tasks`` would print as a traceback and exit 1 on; a SystemExit keeps its code."""
    capfd.readouterr()
    try:
        code = run_cli(*args)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except Exception:
        traceback.print_exc()
        code = 1
    return code, capfd.readouterr().err


def error_problems(code: int, err: str, fragments: list[str]) -> list[str]:
    """What is wrong with a user error's exit status and stderr ([] when it is as it should be)."""
    problems = []
    if code != 2:
        problems.append(f"exit status {code}, not 2")
    if "Traceback (most recent call last)" in err:
        problems.append("a traceback on stderr")
    lines = [line for line in err.splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    if not starts:
        problems.append("no line starting with 'error: '")
        return problems
    message = lines[starts[-1] :]
    if len(message) > 4:
        problems.append(f"the message and what follows it is {len(message)} lines, not at most 4")
    text = "\n".join(message)
    problems += [f"the message does not say {fragment!r}" for fragment in fragments if fragment not in text]
    return problems


def tail(err: str, lines: int = 12) -> str:
    return "\n".join([line for line in err.splitlines() if line.strip()][-lines:])


def snapshot(directory: Path) -> dict[str, bytes]:
    if not directory.exists():
        return {}
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def is_output(relative: str) -> bool:
    name = Path(relative).name
    return (
        name in OUTPUT_NAMES
        or name.endswith((".ckpt", ".tsv"))
        or (name.startswith(".") and name.endswith(".tmp"))  # a temp file left behind
    )


def expect_user_error(
    capfd,
    run_dir: Path,
    args: list,
    fragments: list[str],
    *,
    watch: list[Path] = (),
) -> str:
    """Run ``args`` into ``run_dir`` and check the contract. Commands other than ``fit`` find an
    earlier run's metrics and predictions there, which must stay as they were; files in ``watch``
    (outside the run directory) must stay too. Returns stderr."""
    run_dir.mkdir(parents=True, exist_ok=True)
    command = str(args[0])
    if command != "fit":
        for name, content in EARLIER.items():
            (run_dir / name).write_text(content, encoding="utf-8")
    before = snapshot(run_dir)
    watched = {path: path.read_bytes() if path.is_file() else None for path in map(Path, watch)}
    if command == "fit" and "--trainer.max_steps" not in args:
        args = [*args, "--trainer.max_steps", "2"]  # a fit that should have failed up front stays short
    code, err = invoke(capfd, *args, "--trainer.default_root_dir", run_dir, *FAST)
    problems = error_problems(code, err, fragments)
    after = snapshot(run_dir)
    changed = sorted(name for name in before if after.get(name) != before[name])
    new = sorted(name for name in after if name not in before and is_output(name))
    if changed:
        problems.append(f"earlier files changed or removed: {changed}")
    if new:
        problems.append(f"output files written: {new}")
    for path, content in watched.items():
        now = path.read_bytes() if path.is_file() else None
        if now != content:
            problems.append(f"{path} changed")
    assert not problems, "; ".join(problems) + "\n--- stderr (last lines) ---\n" + tail(err)
    return err


def fill(fragments: list[str], **paths) -> list[str]:
    """Fragments with ``{name}`` placeholders replaced by the case's paths."""
    filled = []
    for fragment in fragments:
        for name, value in paths.items():
            fragment = fragment.replace("{" + name + "}", str(value))
        filled.append(fragment)
    return filled


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


# --- one small fitted checkpoint per task -------------------------------------------------------


@dataclass
class Fitted:
    sst2: Path  # best.ckpt
    mrpc: Path
    ner: Path
    ner_last: Path
    squad: Path


@pytest.fixture(scope="module")
def fitted(tiny_bert_dir: Path, tmp_path_factory) -> Fitted:
    # Directory names that spell no task: a message naming a task must not pass by quoting a path.
    root = tmp_path_factory.mktemp("fitted")
    plans = {
        "one": ("configs/sst2.yaml", ()),
        "two": ("configs/mrpc.yaml", ()),
        "three": ("configs/ner.yaml", ()),
        "four": ("configs/squad.yaml", QA_WINDOWS),
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        for name, (config, extra) in plans.items():
            code = run_cli(
                "fit",
                "--config",
                config,
                "--model.pretrained",
                tiny_bert_dir,
                "--trainer.max_steps",
                "1",
                "--trainer.default_root_dir",
                root / name,
                *extra,
                *FAST,
            )
            assert code == 0, f"the fit of {config} failed"
    best = {name: root / name / "checkpoints" / "best.ckpt" for name in plans}
    return Fitted(
        best["one"], best["two"], best["three"], root / "three" / "checkpoints" / "last.ckpt", best["four"]
    )


# --- GLUE TSV files -------------------------------------------------------------------------------

MRPC_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
MRPC_ROW = "1\t1003451\t1003611\tThe council approved the budget .\tThe council passed the budget .\n"

GLUE_CASES = {
    # id: (config, option, file name, content, fragments)
    "glue-missing-column": (
        "sst2",
        "train",
        "train.tsv",
        "sentence\tlabel\na fine film\t1\nno label here\n",
        ["{file}:3", "expected 2 tab-separated columns"],
    ),
    "glue-unknown-label": (
        "sst2",
        "train",
        "train.tsv",
        "sentence\tlabel\na fine film\t1\na sad film\t2\n",
        ["{file}:3", "label '2' is not one of 0, 1"],
    ),
    "glue-empty-file": ("sst2", "train", "train.tsv", "", ["{file}:1", "empty file"]),
    "glue-not-utf8": (
        "sst2",
        "train",
        "train.tsv",
        b"sentence\tlabel\na fine film\t1\nna\xefve\t0\n",
        ["{file}:3", "not valid UTF-8"],
    ),
    "glue-row-too-few-fields": (
        "mrpc",
        "train",
        "train.tsv",
        MRPC_HEADER + MRPC_ROW + "0\t1026170\t1026273\tThe company said its profit rose .\n",
        ["{file}:3", "expected 5 tab-separated columns"],
    ),
    "glue-wrong-header-for-task": (
        "sst2",
        "train",
        "train.tsv",
        MRPC_HEADER + MRPC_ROW,
        ["{file}:1", "'sentence'"],
    ),
    "glue-header-only": ("sst2", "train", "train.tsv", "sentence\tlabel\n", ["{file}", "no examples"]),
    "glue-test-file-as-dev": (
        "sst2",
        "validation",
        "test.tsv",
        "index\tsentence\n0\ta fine film\n1\ta dull film\n",
        ["{file}:1", "no label column 'label'"],
    ),
    "glue-stsb-score-out-of-range": (
        "stsb",
        "train",
        "train.tsv",
        "index\tsentence1\tsentence2\tscore\n0\tA man sings .\tA man is singing .\t7.5\n",
        ["{file}:2", "outside 0.0..5.0"],
    ),
    "glue-stsb-score-not-a-number": (
        "stsb",
        "train",
        "train.tsv",
        "index\tsentence1\tsentence2\tscore\n0\tA man sings .\tA man is singing .\thigh\n",
        ["{file}:2", "'high' is not a number"],
    ),
}


@pytest.mark.parametrize("case", list(GLUE_CASES))
def test_bad_glue_file(case, tiny_bert_dir, tmp_path, capfd):
    config, split, name, content, fragments = GLUE_CASES[case]
    bad = write(tmp_path / "data" / name, content)
    args = ["fit", "--config", f"configs/{config}.yaml", "--model.pretrained", tiny_bert_dir]
    expect_user_error(
        capfd, tmp_path / "run", [*args, f"--data.{split}_file", bad], fill(fragments, file=bad)
    )


def test_generic_table_with_a_missing_field(tiny_bert_dir, tmp_path, capfd):
    """``--data.task classification`` on a JSONL file whose second record lacks the text field."""
    bad = write(tmp_path / "train.jsonl", '{"text": "a fine film", "label": "pos"}\n{"label": "neg"}\n')
    args = ["fit", "--config", "configs/sst2.yaml", "--model.pretrained", tiny_bert_dir]
    args += ["--data.task", "classification", "--data.train_file", bad, "--data.validation_file", bad]
    expect_user_error(capfd, tmp_path / "run", args, [f"{bad}:2", "'text'"])


# --- CoNLL files ----------------------------------------------------------------------------------

CONLL_CASES = {
    # id: (option, content, extra options, fragments)
    "conll-wrong-column-count": (
        "train",
        "EU B-ORG\nrejects O extra\ncalls O\n",
        [],
        ["{file}:2", "expected 2 columns"],
    ),
    "conll-invalid-tag": ("train", "Anna B_PER\nsmiled O\n", [], ["{file}:1", "invalid tag 'B_PER'"]),
    "conll-untagged-train": ("train", "Anna\nsmiled\n", [], ["{file}:1", "no tag column"]),
    "conll-tag-unseen-in-train": (
        "validation",
        "On O\nMonday B-DATE\nit O\nrained O\n",
        [],
        ["{file}:2", "'DATE'", "--data.unseen_tags map_to_o"],
    ),
    "conll-empty-file": ("train", "", [], ["{file}", "no sentences"]),
    "conll-docstart-only": ("train", "-DOCSTART- O\n\n", [], ["{file}", "no sentences"]),
    "conll-not-utf8": ("train", b"Anna B-PER\nna\xefve O\n", [], ["{file}:2", "not valid UTF-8"]),
    "conll-tag-column-out-of-range": (
        "train",
        "Anna B-PER\nsmiled O\n",
        ["--data.tag_column", "3"],
        ["{file}:1", "tag column 3"],
    ),
}


@pytest.mark.parametrize("case", list(CONLL_CASES))
def test_bad_conll_file(case, tiny_bert_dir, tmp_path, capfd):
    split, content, extra, fragments = CONLL_CASES[case]
    bad = write(tmp_path / "data" / f"{split}.conll", content)
    args = ["fit", "--config", "configs/ner.yaml", "--model.pretrained", tiny_bert_dir, *extra]
    expect_user_error(
        capfd, tmp_path / "run", [*args, f"--data.{split}_file", bad], fill(fragments, file=bad)
    )


# --- SQuAD JSON and JSONL -------------------------------------------------------------------------


def squad_dev() -> dict:
    return json.loads((ROOT / "data" / "squad" / "dev-v1.1.json").read_text(encoding="utf-8"))


def first_question(document: dict) -> dict:
    return document["data"][0]["paragraphs"][0]["qas"][0]


def shifted_answer_start(document: dict) -> dict:
    first_question(document)["answers"][0]["answer_start"] += 3  # points into "1903" -> "3. T"
    return document


def without_question(document: dict) -> dict:
    del first_question(document)["question"]
    return document


def one_empty_answer_list(document: dict) -> dict:
    first_question(document)["answers"] = []  # a v2.0 habit in a file that says "version": "1.1"
    return document


def impossible_as_text(document: dict) -> dict:
    first_question(document)["is_impossible"] = "no"
    return document


def squad_json(change: Callable[[dict], dict]) -> Callable[[], str]:
    return lambda: json.dumps(change(squad_dev()), indent=1)


PREDICT_LINE = '{"id": "q1", "question": "Who rows?", "context": "Anna rows the boat."}'

SQUAD_CASES = {
    # id: (command, option, file name, content, fragments); validate and predict use the fitted checkpoint
    "squad-not-json": (
        "validate",
        "validation",
        "dev.json",
        lambda: '{\n "version": "1.1",\n "data": [\n  {"title": "x", \n',
        ["{file}:4", "not valid JSON"],
    ),
    "squad-wrong-shape": (
        "validate",
        "validation",
        "dev.json",
        lambda: '{"version": "1.1", "data": {"title": "Ferry", "paragraphs": []}}\n',
        ["{file}", "'data' list"],
    ),
    "squad-answer-start-elsewhere": (
        "validate",
        "validation",
        "dev.json",
        squad_json(shifted_answer_start),
        ["{file} (example ardin-a)", "answer_start 69"],
    ),
    "squad-missing-question": (
        "fit",
        "train",
        "train.json",
        squad_json(without_question),
        ["{file} (example ardin-a)", "'question'"],
    ),
    "squad-validation-without-answers": (
        "validate",
        "validation",
        "dev.jsonl",
        lambda: PREDICT_LINE + "\n",
        ["{file}", "'answers'"],
    ),
    "squad-v1.1-with-empty-answers": (
        "fit",
        "train",
        "train.json",
        squad_json(one_empty_answer_list),
        ["{file} (example ardin-a)", "1.1"],
    ),
    "squad-is-impossible-not-bool": (
        "validate",
        "validation",
        "dev.json",
        squad_json(impossible_as_text),
        ["{file} (example ardin-a)", "'is_impossible'"],
    ),
    "squad-jsonl-bad-line": (
        "predict",
        "predict",
        "questions.jsonl",
        lambda: PREDICT_LINE + '\n{"id": "q2", "question": "Why?", context: "no quotes"}\n',
        ["{file}:2", "not valid JSON"],
    ),
    "squad-jsonl-missing-context": (
        "predict",
        "predict",
        "questions.jsonl",
        lambda: PREDICT_LINE + '\n{"id": "q2", "question": "Why?"}\n',
        ["{file}:2", "'context'"],
    ),
    "squad-jsonl-duplicate-id": (
        "predict",
        "predict",
        "questions.jsonl",
        lambda: PREDICT_LINE + "\n" + PREDICT_LINE + "\n",
        ["{file}:2", "duplicate question id"],
    ),
    "squad-empty-file": ("predict", "predict", "questions.jsonl", lambda: "\n", ["{file}", "empty file"]),
}


@pytest.mark.parametrize("case", list(SQUAD_CASES))
def test_bad_squad_file(case, fitted, tiny_bert_dir, tmp_path, capfd):
    command, split, name, content, fragments = SQUAD_CASES[case]
    bad = write(tmp_path / "data" / name, content())
    args = [command, "--config", "configs/squad.yaml", *QA_WINDOWS, f"--data.{split}_file", bad]
    if command == "fit":
        args += ["--model.pretrained", tiny_bert_dir]
    else:
        args += ["--ckpt_path", fitted.squad]
    expect_user_error(capfd, tmp_path / "run", args, fill(fragments, file=bad))


# --- files to predict on ----------------------------------------------------------------------------

PREDICT_CASES = {
    # id: (checkpoint, config, file name, content, fragments)
    "predict-empty-text-file": ("sst2", "sst2", "texts.txt", "\n\n", ["{file}:1", "empty file"]),
    "predict-tab-in-single-text-task": (
        "sst2",
        "sst2",
        "texts.txt",
        "a fine film\nfunny\tand warm\n",
        ["{file}:2", "found a TAB"],
    ),
    "predict-single-texts-for-pair-task": (
        "mrpc",
        "mrpc",
        "pairs.txt",
        "The council approved the budget .\n",
        ["{file}:1", "sentence pair"],
    ),
    "predict-text-not-utf8": (
        "sst2",
        "sst2",
        "texts.txt",
        b"a fine film\nna\xefve\n",
        ["{file}:2", "not valid UTF-8"],
    ),
    "predict-glue-test-short-row": (
        "sst2",
        "sst2",
        "test.tsv",
        "index\tsentence\n0\ta fine film\n1\n",
        ["{file}:3", "expected 2 tab-separated columns"],
    ),
    "ner-predict-empty-text-file": ("ner", "ner", "notes.txt", "", ["{file}", "empty file"]),
    "ner-predict-conll-invalid-tag": (
        "ner",
        "ner",
        "tagged.conll",
        "Anna B-PER\nrows I_PER\n",
        ["{file}:2", "invalid tag 'I_PER'"],
    ),
}


@pytest.mark.parametrize("case", list(PREDICT_CASES))
def test_bad_predict_file_keeps_older_predictions(case, fitted, tmp_path, capfd):
    checkpoint, config, name, content, fragments = PREDICT_CASES[case]
    bad = write(tmp_path / "data" / name, content)
    args = ["predict", "--config", f"configs/{config}.yaml", "--ckpt_path", getattr(fitted, checkpoint)]
    expect_user_error(capfd, tmp_path / "run", [*args, "--data.predict_file", bad], fill(fragments, file=bad))


# --- options: config files and command-line values --------------------------------------------------

OPTION_CASES = {
    # id: (command, config, options, fragments); validate uses the fitted checkpoint of the config's task
    "unknown-task-name": ("fit", "sst2", ["--data.task", "sst3"], ["'sst3'", "sst2"]),
    "batch-size-0": ("fit", "sst2", ["--data.batch_size", "0"], ["batch_size", "0"]),
    "batch-size-negative": ("fit", "sst2", ["--data.batch_size", "-1"], ["batch_size", "-1"]),
    "batch-size-not-a-number": ("fit", "sst2", ["--data.batch_size", "eight"], ["batch_size", "eight"]),
    "max-seq-length-0": ("fit", "sst2", ["--data.max_seq_length", "0"], ["max_seq_length", "0"]),
    "max-seq-length-2": ("fit", "sst2", ["--data.max_seq_length", "2"], ["max_seq_length", "2"]),
    "ner-max-seq-length-2": ("fit", "ner", ["--data.max_seq_length", "2"], ["max_seq_length", "2"]),
    "learning-rate-negative": ("fit", "sst2", ["--model.learning_rate=-3e-5"], ["learning_rate"]),
    # argparse takes "-3e-5" (not "-3" or "-0.5") for an option: the value must still reach the check
    "learning-rate-negative-spaced": ("fit", "sst2", ["--model.learning_rate", "-3e-5"], ["learning_rate"]),
    "warmup-ratio-5": ("fit", "sst2", ["--model.warmup_ratio", "5"], ["warmup_ratio", "5"]),
    "n-best-size-0": ("validate", "squad", ["--model.n_best_size", "0", *QA_WINDOWS], ["n_best_size (0)"]),
    "doc-stride-0": ("fit", "squad", ["--data.doc_stride", "0"], ["doc_stride", "0"]),
    "unknown-tag-scheme": ("fit", "ner", ["--data.tag_scheme", "BILOU"], ["'BILOU'", "BIO"]),
    "misspelt-option": ("fit", "sst2", ["--data.batch_sise", "8"], ["batch_sise"]),
    "resume-last-without-a-run": ("fit", "sst2", ["--ckpt_path", "last"], ["--ckpt_path last", "last.ckpt"]),
}


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_bad_option(case, fitted, tiny_bert_dir, tmp_path, capfd):
    command, config, options, fragments = OPTION_CASES[case]
    args = [command, "--config", f"configs/{config}.yaml", *options]
    if command == "fit":
        args += ["--model.pretrained", tiny_bert_dir]
    else:
        args += ["--ckpt_path", getattr(fitted, config)]
    expect_user_error(capfd, tmp_path / "run", args, fragments)


@pytest.mark.parametrize("task", ["sst2", "ner", "squad"])
def test_validate_with_no_validation_file(task, fitted, tmp_path, capfd):
    """A checkpoint alone names no data file: validate once scored nothing, wrote a record with no
    scores and exited 0."""
    args = ["validate", "--ckpt_path", getattr(fitted, task), *(QA_WINDOWS if task == "squad" else ())]
    expect_user_error(capfd, tmp_path / "run", args, ["no validation data", "--data.validation_file"])


def test_misspelt_key_in_a_config_file(tiny_bert_dir, tmp_path, capfd):
    text = (ROOT / "configs" / "sst2.yaml").read_text(encoding="utf-8")
    assert "    batch_size: 8" in text
    config = write(tmp_path / "my_sst2.yaml", text.replace("    batch_size: 8", "    batch_sise: 8"))
    args = ["fit", "--config", config, "--model.pretrained", tiny_bert_dir]
    expect_user_error(capfd, tmp_path / "run", args, [str(config), "batch_sise"])


def test_missing_config_file(tiny_bert_dir, tmp_path, capfd):
    args = ["fit", "--config", "configs/sst-2.yaml", "--model.pretrained", tiny_bert_dir]
    expect_user_error(capfd, tmp_path / "run", args, ["configs/sst-2.yaml"])


def test_yaml_syntax_error_in_a_config_file(tiny_bert_dir, tmp_path):
    """A fresh process: what a user sees for a config file that is not YAML (a TAB indents line 10)."""
    lines = (ROOT / "configs" / "sst2.yaml").read_text(encoding="utf-8").splitlines()
    number = lines.index("  max_epochs: 5  # paper: 3") + 1
    lines[number - 1] = "\tmax_epochs: 5"
    config = write(tmp_path / "broken.yaml", "\n".join(lines) + "\n")
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tasks",
            "fit",
            "--config",
            str(config),
            "--model.pretrained",
            str(tiny_bert_dir),
        ]
        + ["--trainer.default_root_dir", str(run_dir), *FAST],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    problems = error_problems(result.returncode, result.stderr, [f"{config}:{number}:", "not valid YAML"])
    assert not problems, "; ".join(problems) + "\n--- stderr ---\n" + tail(result.stderr)
    assert not list(run_dir.glob("**/*.ckpt"))


def test_no_config(capfd):
    code, err = invoke(capfd, "fit")
    problems = error_problems(code, err, ["--config configs/<name>.yaml", "configs/sst2.yaml"])
    assert not problems, "; ".join(problems) + "\n" + tail(err)


def test_unknown_command(capfd):
    """``train`` for ``fit``: the message names the command and lists the real ones."""
    code, err = invoke(capfd, "train", "--config", "configs/sst2.yaml")
    problems = error_problems(code, err, ["'train'", "fit"])
    assert not problems, "; ".join(problems) + "\n" + tail(err)


# --- checkpoints ------------------------------------------------------------------------------------


def broken_checkpoint(kind: str, fitted: Fitted, directory: Path) -> Path:
    path = directory / f"{kind}.ckpt"
    if kind == "truncated":
        data = fitted.sst2.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random-bytes":
        path.write_bytes(random.Random(0).randbytes(4096))
    elif kind == "not-ours":
        torch.save({"state_dict": {}, "epoch": 0}, path)
    return path  # "missing": never written


BROKEN_CHECKPOINTS = {
    "truncated": ["{ckpt}", "cannot read"],  # a real checkpoint cut in half
    "empty": ["{ckpt}", "cannot read"],
    "random-bytes": ["{ckpt}", "cannot read"],
    "missing": ["{ckpt}", "not found"],
    "not-ours": ["{ckpt}", "not a bert-tasks checkpoint"],  # a torch file without our payload
}


@pytest.mark.parametrize("kind", list(BROKEN_CHECKPOINTS))
def test_broken_checkpoint(kind, fitted, tmp_path, capfd):
    fragments = BROKEN_CHECKPOINTS[kind]
    ckpt = broken_checkpoint(kind, fitted, tmp_path)
    args = ["validate", "--config", "configs/sst2.yaml", "--ckpt_path", ckpt]
    expect_user_error(capfd, tmp_path / "run", args, fill(fragments, ckpt=ckpt))


def test_truncated_checkpoint_as_pretrained(fitted, tmp_path, capfd):
    ckpt = broken_checkpoint("truncated", fitted, tmp_path)
    args = ["fit", "--config", "configs/sst2.yaml", "--model.pretrained", ckpt]
    expect_user_error(capfd, tmp_path / "run", args, [str(ckpt), "cannot read"])


CROSS_TASK_CASES = {
    # id: (command, config, checkpoint, fragments): the message names the checkpoint and both tasks
    "sst2-checkpoint-under-mrpc-config": ("validate", "mrpc", "sst2", ["{ckpt}", "sst2", "mrpc"]),
    "ner-checkpoint-under-sst2-config": ("validate", "sst2", "ner", ["{ckpt}", "ner", "sst2"]),
    "squad-checkpoint-predicting-ner": ("predict", "ner", "squad", ["{ckpt}", "squad", "ner"]),
    "resume-from-another-tasks-checkpoint": ("fit", "sst2", "ner_last", ["{ckpt}", "ner", "sst2"]),
}


@pytest.mark.parametrize("case", list(CROSS_TASK_CASES))
def test_checkpoint_of_another_task(case, fitted, tiny_bert_dir, tmp_path, capfd):
    command, config, checkpoint, fragments = CROSS_TASK_CASES[case]
    ckpt = getattr(fitted, checkpoint)
    args = [command, "--config", f"configs/{config}.yaml", "--ckpt_path", ckpt]
    if command == "fit":
        args += ["--model.pretrained", tiny_bert_dir, "--trainer.max_steps", "1"]
    expect_user_error(capfd, tmp_path / "run", args, fill(fragments, ckpt=ckpt), watch=[ckpt])


# --- pretrained sources -------------------------------------------------------------------------------


def pretrained_source(kind: str, tiny_bert_dir: Path, directory: Path) -> tuple[Path, Path]:
    """(the source to pass, the file or directory the message must name)."""
    source = directory / "my_bert"
    if kind == "missing-directory":
        return source, source
    if kind == "empty-directory":
        source.mkdir()
        return source, source
    shutil.copytree(tiny_bert_dir, source)
    if kind == "no-weights":
        (source / "model.safetensors").unlink()
        return source, source
    if kind == "config-not-json":
        (source / "config.json").write_text('{"hidden_size": 32,\n "num_hidden_layers": \n', encoding="utf-8")
        return source, source / "config.json"
    if kind == "vocab-smaller-than-embeddings":
        lines = (source / "vocab.txt").read_text(encoding="utf-8").splitlines(keepends=True)
        (source / "vocab.txt").write_text("".join(lines[:2000]), encoding="utf-8")
        return source, source / "vocab.txt"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "missing-directory",
        "empty-directory",
        "no-weights",
        "config-not-json",
        "vocab-smaller-than-embeddings",
    ],
)
def test_bad_pretrained_source(kind, tiny_bert_dir, tmp_path, capfd):
    source, named = pretrained_source(kind, tiny_bert_dir, tmp_path)
    args = ["fit", "--config", "configs/sst2.yaml", "--model.pretrained", source]
    expect_user_error(capfd, tmp_path / "run", args, [str(named)])


# --- where predictions go -------------------------------------------------------------------------------


def predictions_target(kind: str, run_dir: Path) -> tuple[Path, list[Path]]:
    """(--data.predictions_file, files that must stay as they are)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if kind == "under-a-regular-file":
        notes = write(run_dir / "notes", "my notes\n")
        return notes / "predictions.jsonl", [notes]
    if kind == "an-existing-directory":
        (run_dir / "predictions").mkdir()
        return run_dir / "predictions", []
    if kind == "in-an-unwritable-directory":
        locked = run_dir / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        if os.access(locked, os.W_OK):
            locked.chmod(0o700)
            pytest.skip("running as root: a 0o500 directory is still writable")
        return locked / "predictions.jsonl", []
    if kind == "the-input-file":
        texts = write(run_dir / "texts.txt", "a fine film\na dull film\n")
        return texts, [texts]
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "under-a-regular-file",
        "an-existing-directory",
        "in-an-unwritable-directory",
        "the-input-file",
    ],
)
def test_bad_predictions_file(kind, fitted, tmp_path, capfd):
    run_dir = tmp_path / "run"
    target, keep = predictions_target(kind, run_dir)
    predict_file = target if kind == "the-input-file" else write(tmp_path / "texts.txt", "a fine film\n")
    args = ["predict", "--config", "configs/sst2.yaml", "--ckpt_path", fitted.sst2]
    args += ["--data.predict_file", predict_file, "--data.predictions_file", target]
    try:
        expect_user_error(capfd, run_dir, args, [str(target)], watch=keep)
    finally:
        for path in run_dir.rglob("*"):
            if path.is_dir():
                path.chmod(0o700)


# --- evaluating without a checkpoint ------------------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "test"])
def test_evaluation_without_a_checkpoint(command, tiny_bert_dir, tmp_path, capfd):
    """It would score an untrained head and overwrite metrics.json."""
    args = [command, "--config", "configs/sst2.yaml", "--model.pretrained", tiny_bert_dir]
    expect_user_error(capfd, tmp_path / "run", args, ["--ckpt_path"])


def test_a_fit_that_failed_up_front_leaves_the_run_directory_free(tiny_bert_dir, tmp_path, capfd):
    """The corrected command, run again into the same directory, must not be refused as 'already holds
    a run'. (n_best_size is checked when the module is set up: after the data, before training.)"""
    run_dir = tmp_path / "run"
    args = ["fit", "--config", "configs/squad.yaml", "--model.pretrained", tiny_bert_dir, *QA_WINDOWS]
    expect_user_error(capfd, run_dir, [*args, "--model.n_best_size", "0"], ["n_best_size (0)"])
    held = [name for name in ("checkpoints", "config.yaml", "metrics.json") if (run_dir / name).exists()]
    assert not held, f"the failed fit left {held}: the corrected command would be refused"
    code, err = invoke(capfd, *args, "--trainer.max_steps", "1", "--trainer.default_root_dir", run_dir, *FAST)
    assert code == 0, tail(err)


# --- the other commands -------------------------------------------------------------------------------


def test_score_squad_with_a_predictions_file_that_is_not_json(tmp_path, capfd):
    bad = write(tmp_path / "predictions.json", '{"ardin-a": "1903",\n')
    code, err = invoke(capfd, "score-squad", "data/squad/dev-v1.1.json", bad)
    problems = error_problems(code, err, [str(bad), "JSON"])
    assert not problems, "; ".join(problems) + "\n" + tail(err)


def test_score_squad_with_a_missing_data_file(tmp_path, capfd):
    missing = tmp_path / "dev-v1.1.json"
    predictions = write(tmp_path / "predictions.json", '{"ardin-a": "1903"}\n')
    code, err = invoke(capfd, "score-squad", missing, predictions)
    problems = error_problems(code, err, [str(missing), "not found"])
    assert not problems, "; ".join(problems) + "\n" + tail(err)


def test_report_on_a_missing_run_directory(tmp_path, capfd):
    missing = tmp_path / "outputs" / "sst2"
    code, err = invoke(capfd, "report", missing)
    problems = error_problems(code, err, [str(missing)])
    assert not problems, "; ".join(problems) + "\n" + tail(err)
    assert not missing.exists()
