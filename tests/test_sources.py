"""Where weights come from: every source form, TF training directories, and the errors of each."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bert_core import BertModel, CheckpointError, load_tokenizer
from bert_core.sources import ResolvedSource, resolve_source
from bert_core.tf_checkpoint import read_tf_checkpoint, resolve_tf_prefix

from .conftest import shared_path
from .test_bert_core import ATOL, copy_tf, fixture_dir

DATA_SUFFIX = ".data-00000-of-00001"


def encoder_errors(model: BertModel, expected) -> dict[str, float]:
    """Max abs difference of the encoder's outputs from the fixture's, on real tokens."""
    model.eval()
    with torch.no_grad():
        out = model(
            torch.tensor(expected["input_ids"]),
            torch.tensor(expected["attention_mask"]),
            torch.tensor(expected["token_type_ids"]),
        )
    real = expected["attention_mask"].astype(bool)
    return {
        "last_hidden_state": float(
            np.abs(out.last_hidden_state.numpy()[real] - expected["last_hidden_state"][real]).max()
        ),
        "pooled_output": float(np.abs(out.pooler_output.numpy() - expected["pooled_output"]).max()),
    }


def assert_fixture_variables(tensors: dict[str, np.ndarray]) -> None:
    """The tensors are the fixture's, by the per-variable sums its generator recorded."""
    info = json.loads((fixture_dir() / "expected_outputs.json").read_text())
    assert sorted(tensors) == sorted(v["name"] for v in info["checkpoint_variables"])
    for variable in info["checkpoint_variables"]:
        array = tensors[variable["name"]].astype(np.float64)
        assert array.sum() == pytest.approx(variable["sum"], rel=1e-9, abs=1e-9), variable["name"]
    assert int(tensors["global_step"]) == 12345


# -- the Google release layout and HF layout -------------------------------------------------------


@pytest.mark.parametrize("form", ["directory", "prefix", "index file", "data file"])
def test_google_checkpoint_in_every_form(form):
    directory = fixture_dir() / "tf_checkpoint"
    given = {
        "directory": directory,
        "prefix": directory / "bert_model.ckpt",
        "index file": directory / "bert_model.ckpt.index",
        "data file": directory / f"bert_model.ckpt{DATA_SUFFIX}",
    }[form]
    for source in (given, str(given)):
        assert resolve_source(source) == ResolvedSource(
            "tf", directory, directory / "bert_model.ckpt", directory / "bert_config.json", str(given)
        )


def test_hf_directory_and_embedded_package():
    directory = fixture_dir() / "hf"
    assert resolve_source(directory) == ResolvedSource(
        "hf", directory, directory / "model.safetensors", directory / "config.json", str(directory)
    )
    minilm = resolve_source("all-MiniLM-L6-v2")
    assert minilm.kind == "hf" and (minilm.directory / "vocab.txt").is_file()


# -- a TF training directory: several model.ckpt-N and a `checkpoint` state file ------------------


def training_directory(tmp_path: Path, steps=(100, 200)) -> Path:
    """The fixture's bundle saved as model.ckpt-N for each step, with its config and vocab."""
    source = shared_path("fixtures", "google_bert_tiny", "tf_checkpoint")
    target = tmp_path / "train"
    target.mkdir()
    for step in steps:
        for suffix in (".index", DATA_SUFFIX):
            shutil.copyfile(source / f"bert_model.ckpt{suffix}", target / f"model.ckpt-{step}{suffix}")
    for name in ("bert_config.json", "vocab.txt"):
        shutil.copyfile(source / name, target / name)
    return target


def corrupt_data(prefix: Path) -> None:
    """Flip a byte of the bundle's data, so loading it would be a checksum error."""
    data = Path(f"{prefix}{DATA_SUFFIX}")
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(raw)


def write_state_file(directory: Path, named: str) -> None:
    """A state file as tf.train.Saver writes it: the latest checkpoint, then all it keeps."""
    (directory / "checkpoint").write_text(
        f'model_checkpoint_path: "{named}"\n'
        'all_model_checkpoint_paths: "model.ckpt-100"\nall_model_checkpoint_paths: "model.ckpt-200"\n'
    )


@pytest.mark.parametrize(("step", "absolute"), [(200, False), (100, False), (200, True)])
def test_training_directory_loads_the_checkpoint_the_state_file_names(tmp_path, step, absolute):
    directory = training_directory(tmp_path)
    corrupt_data(directory / f"model.ckpt-{300 - step}")  # the other one: loading it would fail
    named = directory / f"model.ckpt-{step}"
    write_state_file(directory, str(named) if absolute else named.name)

    assert resolve_tf_prefix(directory) == named
    assert resolve_source(directory).weights == named
    assert_fixture_variables(read_tf_checkpoint(directory))
    errors = encoder_errors(
        BertModel.from_pretrained(directory), np.load(fixture_dir() / "expected_outputs.npz")
    )
    assert max(errors.values()) <= ATOL, errors
    assert load_tokenizer(directory)("Hello, world!")["input_ids"] == [101, 468, 120, 405, 109, 102]


def test_training_directory_without_state_file_is_ambiguous(tmp_path):
    directory = training_directory(tmp_path)
    message = (
        r"expected exactly one \*\.index checkpoint file, found model\.ckpt-100\.index, "
        r"model\.ckpt-200\.index; pass the prefix of the one to load .*or add a 'checkpoint' state file"
    )
    with pytest.raises(CheckpointError, match=message):
        BertModel.from_pretrained(directory)
    with pytest.raises(CheckpointError, match=message):
        read_tf_checkpoint(directory)
    # the prefix says which
    errors = encoder_errors(
        BertModel.from_pretrained(directory / "model.ckpt-100"),
        np.load(fixture_dir() / "expected_outputs.npz"),
    )
    assert max(errors.values()) <= ATOL, errors


def test_state_file_naming_a_missing_checkpoint_or_none(tmp_path):
    directory = training_directory(tmp_path)
    write_state_file(directory, "model.ckpt-300")
    message = r"missing checkpoint index file .*model\.ckpt-300\.index \(named by .*checkpoint\)"
    with pytest.raises(CheckpointError, match=message):
        BertModel.from_pretrained(directory)
    with pytest.raises(CheckpointError, match=message):
        read_tf_checkpoint(directory)
    (directory / "checkpoint").write_text("garbage\n")
    for load in (BertModel.from_pretrained, read_tf_checkpoint):
        with pytest.raises(CheckpointError, match="no model_checkpoint_path line"):
            load(directory)


# -- missing things (moved from test_bert_core.py) ----------------------------------------------------


def test_missing_directory_and_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such directory"):
        BertModel.from_pretrained(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no model.safetensors, pytorch_model.bin or TF checkpoint"):
        BertModel.from_pretrained(tmp_path)
    target = copy_tf(tmp_path)
    (target / "bert_config.json").unlink()
    with pytest.raises(CheckpointError, match="no bert_config.json"):
        BertModel.from_pretrained(target)


def test_hub_id_offline_fails_fast_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="bert-base-uncased.*local copy"):
        BertModel.from_pretrained("bert-base-uncased")
