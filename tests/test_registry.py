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
