"""Shared fixtures: paths to ../shared and a tiny random BERT with the real uncased vocabulary."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from bert_core import BertConfig, BertModel, resolve_source

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# The datasets cache (tokenised features, when a test gives no --data.cache_dir) goes to a temp
# directory of this session, not the user's ~/.cache/huggingface. datasets reads these variables
# when it is first imported, so this runs before any test module is; subprocesses (python -m
# tasks) inherit them through the environment. Removed in pytest_unconfigure.
assert "datasets" not in sys.modules, "conftest must set the cache before datasets is imported"
HF_HOME = Path(tempfile.mkdtemp(prefix="bert-tasks-tests-hf-"))
os.environ["HF_HOME"] = str(HF_HOME)
os.environ["HF_DATASETS_CACHE"] = str(HF_HOME / "datasets")
os.environ["MPLCONFIGDIR"] = str(HF_HOME / "matplotlib")  # the report's font cache, not ~/.cache


def pytest_unconfigure(config) -> None:
    shutil.rmtree(HF_HOME, ignore_errors=True)


def shared_path(*parts: str) -> Path:
    """A path under ../shared, skipping the test when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found (../shared holds the test fixtures and data)")
    return path


def save_tiny_bert(directory: Path, vocab_from: Path | None = None, **overrides) -> Path:
    """A random BERT (2 layers, H=32, 2 heads unless ``overrides`` say otherwise, seed 0) in HF
    format in ``directory``, with MiniLM's real 30,522-token uncased vocab (or ``vocab_from``'s)."""
    torch.manual_seed(0)
    sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    config = BertConfig(vocab_size=30522, max_position_embeddings=512, **{**sizes, **overrides})
    BertModel(config).save_pretrained(directory)
    if vocab_from is None:
        shutil.copy(resolve_source("all-MiniLM-L6-v2").directory / "vocab.txt", directory / "vocab.txt")
        (directory / "tokenizer_config.json").write_text('{"do_lower_case": true}\n')
    else:
        for name in ("vocab.txt", "tokenizer_config.json"):
            shutil.copy(vocab_from / name, directory / name)
    return directory


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A random 2-layer, H=32 BERT in HF format with MiniLM's real 30,522-token uncased vocab."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def mixing_bert_dir(tiny_bert_dir: Path, tmp_path_factory) -> Path:
    """The tiny BERT with large random weights (initializer_range 0.5, not 0.02): attention then
    mixes the tokens into [CLS], so outputs differ between inputs. With 0.02 every input gets
    nearly the same output: all one class, or STS-B scores 1e-5 apart that the 6 decimals of
    predictions.jsonl cannot reproduce the correlations from."""
    return save_tiny_bert(tmp_path_factory.mktemp("mixing_bert"), tiny_bert_dir, initializer_range=0.5)


@pytest.fixture(scope="session")
def tiny_tf_dir() -> Path:
    return shared_path("fixtures", "google_bert_tiny", "tf_checkpoint")


def run_cli(*args: str) -> int:
    """Run ``python -m tasks ARGS`` in-process; returns the exit code (user errors give 2)."""
    from tasks.cli import main

    return main([str(a) for a in args])


# Trainer options that keep end-to-end tests to seconds and their output short: no progress bar,
# no model summary, and (FAST_TRAINER_ARGS) one CPU process. QUIET_TRAINER_ARGS alone is for runs
# that choose their own devices.
QUIET_TRAINER_ARGS = ("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false")
FAST_TRAINER_ARGS = (*QUIET_TRAINER_ARGS, "--trainer.accelerator", "cpu", "--trainer.devices", "1")


@pytest.fixture
def fast_trainer_args() -> list[str]:
    return list(FAST_TRAINER_ARGS)


@pytest.fixture(autouse=True)
def lightning_logs_to_the_real_stderr():
    """Lightning's log handlers keep the ``sys.stderr`` of the moment they were made: under pytest,
    some earlier test's capture, closed by now (every log line would then print a '--- Logging
    error ---' traceback). Point them at the process's stderr, file descriptor 2, which ``capfd``
    captures."""
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if type(handler) is logging.StreamHandler and handler.stream is not sys.stdout:
                handler.stream = sys.__stderr__


@pytest.fixture(scope="session")
def deep_bert_dir(tiny_bert_dir: Path, tmp_path_factory) -> Path:
    """A random 4-layer, 4-head BERT (H=32, large weights as ``mixing_bert_dir``): room for a
    2-layer student and for pruning a quarter of the heads."""
    return save_tiny_bert(
        tmp_path_factory.mktemp("deep_bert"),
        tiny_bert_dir,
        num_hidden_layers=4,
        num_attention_heads=4,
        initializer_range=0.5,
    )


@pytest.fixture(scope="session")
def sst2_teacher_ckpt(deep_bert_dir: Path, tmp_path_factory) -> Path:
    """An SST-2 checkpoint of the 4-layer model after a few steps on the shipped sample."""
    run_dir = tmp_path_factory.mktemp("sst2_teacher")
    sample = ROOT / "data" / "glue" / "SST-2"
    code = run_cli(
        "fit",
        "--config",
        ROOT / "configs" / "sst2.yaml",
        "--data.train_file",
        sample / "train.tsv",
        "--data.validation_file",
        sample / "dev.tsv",
        "--data.test_file",
        sample / "dev.tsv",
        "--data.predict_file",
        sample / "test.tsv",
        "--model.pretrained",
        deep_bert_dir,
        "--trainer.max_steps",
        "4",
        "--trainer.default_root_dir",
        run_dir,
        *FAST_TRAINER_ARGS,
    )
    assert code == 0
    return run_dir / "checkpoints" / "best.ckpt"


@contextlib.contextmanager
def mounted_tmpfs(directory: Path, size: str = "256m"):
    """A tmpfs of ``size`` mounted at ``directory`` (another filesystem than $TMPDIR's), unmounted
    after; the test is skipped, with the reason, when this process may not mount one (not root, or
    a container without the capability)."""
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True)


@pytest.fixture
def tmpfs(tmp_path: Path):
    """A fresh 256 MB tmpfs, a filesystem other than the temp directory's."""
    with mounted_tmpfs(tmp_path / "tmpfs") as directory:
        yield directory


def evaluation_metrics(run_dir: Path, folder: str | None = None) -> dict:
    """The metrics.json a validate or test wrote into ``run_dir/eval/<folder>/`` (by default the
    latest one there): evaluations never write over the fit's own metrics.json."""
    import json

    if folder is not None:
        path = Path(run_dir) / "eval" / folder / "metrics.json"
    else:
        path = max(Path(run_dir).glob("eval/*/metrics.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(path.read_text(encoding="utf-8"))
