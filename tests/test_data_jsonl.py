"""The one JSONL reader: values with their line numbers, blank lines skipped, bad lines named."""

from __future__ import annotations

import pytest

from tasks.data.jsonl import iter_jsonl, iter_jsonl_objects
from tasks.io import DataError


def write(tmp_path, text: str, name: str = "x.jsonl"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_values_come_with_their_line_numbers_and_blank_lines_are_skipped(tmp_path):
    path = write(tmp_path, '\ufeff{"a": 1}\r\n\n   \n[2, "é"]\n"three"')
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (4, [2, "é"]), (5, "three")]


def test_lines_already_read_are_not_read_again(tmp_path):
    missing = tmp_path / "not-there.jsonl"  # only named in errors
    assert list(iter_jsonl(missing, ['{"a": 1}', "", "2"])) == [(1, {"a": 1}), (3, 2)]
    with pytest.raises(DataError, match=r"not-there.jsonl:2: not valid JSON: Expecting value \(column 1\)"):
        list(iter_jsonl(missing, ["1", "}"]))


def test_a_bad_line_is_a_data_error_naming_file_line_and_problem(tmp_path):
    path = write(tmp_path, '{"a": 1}\n\n{"a": \n{"a": 3}\n')
    records = iter_jsonl(path)
    assert next(records) == (1, {"a": 1})  # read as the file goes: the good line comes first
    with pytest.raises(DataError) as caught:
        next(records)
    assert (caught.value.path, caught.value.line) == (str(path), 3)
    assert caught.value.problem == "not valid JSON: Expecting value (column 7)"
    assert str(caught.value) == f"{path}:3: not valid JSON: Expecting value (column 7)"


def test_objects_only(tmp_path):
    path = write(tmp_path, '{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"x.jsonl:2: expected a JSON object, found list"):
        list(iter_jsonl_objects(path))
    assert list(iter_jsonl_objects(path, ['{"b": null}'])) == [(1, {"b": None})]


def test_missing_file_and_bad_bytes_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        list(iter_jsonl(tmp_path / "nope.jsonl"))
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(DataError, match=r"bytes.jsonl:2: not valid UTF-8"):
        list(iter_jsonl(path))
