"""Every shipped config (configs/*.yaml, whichever task added it) parses, instantiates and runs offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks.cli import BertTasksCLI
from tasks.data.glue import GLUE_TASKS
from tasks.datamodule import TaskDataModule
from tasks.module import TaskModule

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI.s args parameter")

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
DATA_FILE_KEYS = ("train_file", "validation_file", "validation_mismatched_file", "test_file", "predict_file")
# Values the CLI links from one section to another: a config that writes them states them twice.
LINKED_KEYS = {"model": ("task", "label_names", "num_labels"), "data": ("tokenizer",)}


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_configs_are_found():
    names = {path.stem for path in CONFIGS}
    glue = {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}
    assert glue <= names, f"missing GLUE configs: {sorted(glue - names)}"


@pytest.mark.parametrize("config", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_config_instantiates(config: Path, tiny_bert_dir: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs' data paths are relative to the repository root
    cli = BertTasksCLI(
        args=[
            "--config",
            str(config),
            "--model.pretrained",
            str(tiny_bert_dir),
            "--trainer.default_root_dir",
            str(tmp_path),
        ],
        run=False,
    )
    assert isinstance(cli.model, TaskModule)
    assert isinstance(cli.datamodule, TaskDataModule)
    # The links: the tokenizer follows the encoder, the task and the labels flow from data to model.
    assert cli.datamodule.tokenizer_source == str(tiny_bert_dir)
    assert cli.model.hparams.task == cli.datamodule.task
    assert cli.model.label_names == cli.datamodule.label_names
    assert cli.model.hidden_size == 32  # the tiny encoder was loaded, not the config's default
    assert Path(cli.trainer.default_root_dir) == tmp_path
    if cli.datamodule.task in GLUE_TASKS:
        data = cli.datamodule
        assert data.max_seq_length == 128
        # The samples are small: batch 8 keeps more than one optimizer step per epoch, so the
        # warm-up and the linear decay have steps to act on.
        assert len(data.read("train")) > data.batch_size
        if data.task == "mnli":
            assert data.validation_mismatched_file == "data/glue/MNLI/dev_mismatched.tsv"


@pytest.mark.parametrize("config", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_config_runs_offline_as_shipped(config: Path):
    """The embedded encoder by default, the shipped samples as data, nothing linked written twice."""
    document = load_yaml(config)
    model_args = document["model"]["init_args"]
    # A distillation student starts from its teacher (--model.teacher) unless given an encoder.
    distilling = document["model"]["class_path"].startswith("tasks.distillation.")
    default = None if distilling else "all-MiniLM-L6-v2"
    assert model_args["pretrained"] == default
    data_args = document["data"]["init_args"]
    for key in DATA_FILE_KEYS:
        if data_args.get(key) is not None:
            path = ROOT / data_args[key]
            assert path.is_file(), f"{config.name}: data.{key} = {data_args[key]} is not in the repository"
    for section, keys in LINKED_KEYS.items():
        written = [key for key in keys if key in document[section].get("init_args", {})]
        assert not written, f"{config.name}: {section}.{written} are linked by the CLI; do not write them"
