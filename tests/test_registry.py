"""The registry is the one list of task kinds: every shipped config and checkpoint agrees with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks.io import UserError
from tasks.registry import TASKS, kind_of_class, kind_of_class_path, stored_kind

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_config_names_a_registered_kind_and_its_data_module(config):
    text = yaml.safe_load(config.read_text(encoding="utf-8"))
    kind = kind_of_class_path(text["model"]["class_path"])
    assert kind is not None, f"{config.name}: {text['model']['class_path']} is not in tasks/registry.py"
    assert text["data"]["class_path"] == kind.data_module


def test_every_row_imports_and_maps_back_to_itself():
    for key, row in TASKS.items():
        module, data = row.module_class(), row.data_module_class()
        assert kind_of_class(module) is row and row.key == key
        assert (
            module.__name__ == row.module.rsplit(".", 1)[1]
            and data.__name__ == row.data_module.rsplit(".", 1)[1]
        )
        assert row.saves_as is None or row.saves_as in TASKS


def test_a_checkpoint_names_a_key_never_a_path():
    payload = {"bert_config": {}, "vocab": [], "do_lower_case": True}
    assert (
        stored_kind("x.ckpt", {"payload": {**payload, "task_kind": "qa"}, "hyper_parameters": {}}).key == "qa"
    )
    old = {"payload": payload, "hyper_parameters": {"_class_path": "tasks.tagging.TaggingModule"}}
    assert stored_kind("x.ckpt", old).key == "tagging"  # written before the key: matched as a string
    for stored in (
        {"payload": {**payload, "task_kind": "os.system"}, "hyper_parameters": {}},
        {"payload": payload, "hyper_parameters": {"_class_path": "os.system"}},
        {"payload": payload, "hyper_parameters": {}},
    ):
        with pytest.raises(UserError, match="x.ckpt"):
            stored_kind("x.ckpt", stored)


def test_the_command_table_agrees_with_lightning_and_the_readme():
    """As litgpt's ``_check_commands``: every command in the table exists, runs a real function, and
    is documented; the Lightning commands are exactly LightningCLI's."""
    import importlib

    from tasks.app import BertTasksCLI
    from tasks.cli import EXTRA_COMMANDS, LIGHTNING_COMMANDS

    assert set(LIGHTNING_COMMANDS) == set(BertTasksCLI.subcommands())
    assert not set(LIGHTNING_COMMANDS) & set(EXTRA_COMMANDS)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, (target, _help) in EXTRA_COMMANDS.items():
        module_name, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module_name), function)), target
        assert f"python -m tasks {name}" in readme, f"README never shows `python -m tasks {name}`"
    for name in LIGHTNING_COMMANDS:
        assert f"python -m tasks {name}" in readme


def test_every_row_is_a_task_module_with_its_data_module():
    from tasks.datamodule import TaskDataModule
    from tasks.module import TaskModule

    for row in TASKS.values():
        assert issubclass(row.module_class(), TaskModule) and issubclass(
            row.data_module_class(), TaskDataModule
        )
        assert row.saves_as is None or TASKS[row.saves_as].data_module == row.data_module
        if row.hf_architecture is not None:  # exportable: its ONNX outputs are its head's
            assert row.onnx_outputs in (("logits",), ("start_logits", "end_logits"))
