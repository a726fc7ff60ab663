"""TF-free checkpoint reader: Google's tiny BERT fixture, corrupted copies and synthetic bundles."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from bert_core import tf_checkpoint
from bert_core.tf_checkpoint import (
    CheckpointError,
    list_tf_variables,
    read_tf_checkpoint,
    resolve_tf_prefix,
)

FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "google_bert_tiny"
CKPT_DIR = FIXTURE / "tf_checkpoint"
PREFIX = CKPT_DIR / "bert_model.ckpt"
DATA_NAME = "bert_model.ckpt.data-00000-of-00001"
needs_fixture = pytest.mark.skipif(
    not PREFIX.with_suffix(".ckpt.index").is_file(), reason=f"{FIXTURE} is absent"
)

CRC_IMPLEMENTATIONS = {"default": tf_checkpoint.crc32c, "numpy": tf_checkpoint._crc32c_numpy}


@pytest.fixture(scope="module")
def expected_variables() -> list[dict]:
    return json.loads((FIXTURE / "expected_outputs.json").read_text())["checkpoint_variables"]


@pytest.fixture()
def ckpt_copy(tmp_path: Path) -> Path:
    """Writable copy of the fixture's checkpoint files; returns the prefix."""
    for name in (DATA_NAME, "bert_model.ckpt.index"):
        shutil.copyfile(CKPT_DIR / name, tmp_path / name)
    return tmp_path / "bert_model.ckpt"


def _entries(prefix: Path) -> dict[str, tf_checkpoint._Entry]:
    return {entry.name: entry for entry in tf_checkpoint._read_bundle(prefix)[1]}


# ------------------------------------------------------------------ the real (TF-written) fixture
@needs_fixture
@pytest.mark.parametrize("crc", CRC_IMPLEMENTATIONS)
def test_fixture_matches_expected_summaries(expected_variables, crc, monkeypatch):
    monkeypatch.setattr(tf_checkpoint, "crc32c", CRC_IMPLEMENTATIONS[crc])
    tensors = read_tf_checkpoint(PREFIX)
    assert sorted(tensors) == sorted(v["name"] for v in expected_variables)
    assert len(tensors) == 47
    for expected in expected_variables:
        array = tensors[expected["name"]]
        assert list(array.shape) == expected["shape"], expected["name"]
        assert str(array.dtype) == expected["dtype"], expected["name"]
        as64 = array.astype(np.float64)
        assert as64.sum() == pytest.approx(expected["sum"], rel=1e-9, abs=1e-9), expected["name"]
        assert np.abs(as64).sum() == pytest.approx(expected["abs_sum"], rel=1e-9), expected["name"]
        assert array.ravel()[:3].tolist() == expected["first_values"], expected["name"]


@needs_fixture
def test_fixture_global_step_and_layout():
    tensors = read_tf_checkpoint(PREFIX)
    step = tensors["global_step"]
    assert step.shape == () and step.dtype == np.int64 and int(step) == 12345
    assert tensors["bert/embeddings/word_embeddings"].shape == (513, 64)
    assert tensors["cls/seq_relationship/output_weights"].shape == (2, 64)  # stored [out, in]
    assert tensors["bert/pooler/dense/kernel"].flags.writeable  # torch.from_numpy without a warning


@needs_fixture
def test_list_variables_agrees_with_expected(expected_variables):
    listed = list_tf_variables(PREFIX)
    assert listed == {v["name"]: (tuple(v["shape"]), v["dtype"]) for v in expected_variables}
    assert listed["global_step"] == ((), "int64")


@needs_fixture
@pytest.mark.parametrize(
    "given", [CKPT_DIR, PREFIX, str(PREFIX), CKPT_DIR / "bert_model.ckpt.index", CKPT_DIR / DATA_NAME]
)
def test_resolve_prefix(given):
    assert resolve_tf_prefix(given) == PREFIX
    assert sorted(read_tf_checkpoint(given)) == sorted(list_tf_variables(PREFIX))


@needs_fixture
def test_resolve_prefix_uses_checkpoint_state_file(tmp_path: Path):
    for step in (1000, 2000):
        for suffix in (".index", ".data-00000-of-00001"):
            shutil.copyfile(f"{PREFIX}{suffix}", tmp_path / f"model.ckpt-{step}{suffix}")
    with pytest.raises(CheckpointError, match=r"expected exactly one \*\.index .*model\.ckpt-1000\.index"):
        resolve_tf_prefix(tmp_path)
    (tmp_path / "checkpoint").write_text(
        'model_checkpoint_path: "model.ckpt-2000"\nall_model_checkpoint_paths: "model.ckpt-1000"\n'
    )
    assert resolve_tf_prefix(tmp_path) == tmp_path / "model.ckpt-2000"


def test_resolve_prefix_errors(tmp_path: Path):
    with pytest.raises(CheckpointError, match="found none"):
        resolve_tf_prefix(tmp_path)
    with pytest.raises(CheckpointError, match=r"missing checkpoint index file .*nothing\.ckpt\.index"):
        read_tf_checkpoint(tmp_path / "nothing.ckpt")


# ------------------------------------------------------------------ corrupted copies of the fixture
@needs_fixture
def test_truncated_data_shard(ckpt_copy: Path):
    last = max(_entries(ckpt_copy).values(), key=lambda entry: entry.offset)
    data = Path(f"{ckpt_copy}.data-00000-of-00001")
    data.write_bytes(data.read_bytes()[: last.offset + last.size - 1])
    with pytest.raises(CheckpointError, match="truncated data shard") as error:
        read_tf_checkpoint(ckpt_copy)
    assert DATA_NAME in str(error.value) and repr(last.name) in str(error.value)


@needs_fixture
@pytest.mark.parametrize("crc", CRC_IMPLEMENTATIONS)
def test_flipped_byte_names_the_tensor(ckpt_copy: Path, crc, monkeypatch):
    monkeypatch.setattr(tf_checkpoint, "crc32c", CRC_IMPLEMENTATIONS[crc])
    victim = "bert/encoder/layer_1/attention/self/key/kernel"  # 16 KB: exercises the lane path
    data = Path(f"{ckpt_copy}.data-00000-of-00001")
    raw = bytearray(data.read_bytes())
    raw[_entries(ckpt_copy)[victim].offset + 1234] ^= 0x01
    data.write_bytes(raw)
    with pytest.raises(CheckpointError, match=f"checksum mismatch in .*{DATA_NAME}: tensor '{victim}'"):
        read_tf_checkpoint(ckpt_copy)


@needs_fixture
def test_missing_data_shard(ckpt_copy: Path):
    Path(f"{ckpt_copy}.data-00000-of-00001").unlink()
    assert "global_step" in list_tf_variables(ckpt_copy)  # the index alone still lists
    with pytest.raises(CheckpointError, match=f"missing data shard .*{DATA_NAME}"):
        read_tf_checkpoint(ckpt_copy)


@needs_fixture
@pytest.mark.parametrize("position", [0, 100, 1000])
def test_corrupted_index_block(ckpt_copy: Path, position: int):
    index = Path(f"{ckpt_copy}.index")
    raw = bytearray(index.read_bytes())
    raw[position] ^= 0x10
    index.write_bytes(raw)
    with pytest.raises(CheckpointError, match=r"corrupt index .*bert_model\.ckpt\.index: checksum mismatch"):
        list_tf_variables(ckpt_copy)


@needs_fixture
def test_bad_magic(ckpt_copy: Path):
    index = Path(f"{ckpt_copy}.index")
    raw = bytearray(index.read_bytes())
    raw[-1] ^= 0xFF
    index.write_bytes(raw)
    with pytest.raises(CheckpointError, match=r"bert_model\.ckpt\.index is not .* \(bad magic number\)"):
        read_tf_checkpoint(ckpt_copy)
    index.write_bytes(b"")
    with pytest.raises(CheckpointError, match="bad magic"):
        read_tf_checkpoint(ckpt_copy)


# ------------------------------------------------------------------ synthetic bundles (our own writer)
TF_CODES = {"float32": 1, "float64": 2, "int32": 3, "uint8": 4, "int16": 5, "int8": 6, "int64": 9,
            "bool": 10, "bfloat16": 14, "float16": 19, "string": 7}  # fmt: skip


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _field(number: int, value: int | bytes, fixed32: bool = False) -> bytes:
    if fixed32:
        return _varint(number << 3 | 5) + value.to_bytes(4, "little")
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    return _varint(number << 3) + _varint(value)


def _block_with_trailer(items: list[tuple[bytes, bytes]]) -> bytes:
    body, previous = bytearray(), b""
    for key, value in items:  # prefix-compress every key against the previous one, one restart at 0
        shared = len(next(p for p in (key[:n] for n in range(len(key), -1, -1)) if previous.startswith(p)))
        body += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        previous = key
    body += (0).to_bytes(4, "little") + (1).to_bytes(4, "little")
    return bytes(body) + b"\x00" + tf_checkpoint.masked_crc32c(bytes(body) + b"\x00").to_bytes(4, "little")


def write_bundle(
    prefix: Path, tensors: dict, num_shards: int = 1, big_endian: bool = False, extra: dict = None
):
    """Write a tensor bundle: tensor i goes to shard i % num_shards. `extra` adds raw entry fields."""
    shards = [bytearray() for _ in range(num_shards)]
    items = [(b"", _field(1, num_shards) + _field(2, int(big_endian)) + _field(3, _field(1, 1)))]
    for i, (name, (array, dtype_name)) in enumerate(sorted(tensors.items())):
        raw = array.astype(array.dtype.newbyteorder(">") if big_endian else array.dtype).tobytes()
        shard = shards[i % num_shards]
        shape = b"".join(_field(2, _field(1, dim)) for dim in array.shape)
        entry = _field(1, TF_CODES[dtype_name]) + _field(2, shape) + _field(3, i % num_shards)
        entry += (
            _field(4, len(shard)) + _field(5, len(raw)) + _field(6, tf_checkpoint.masked_crc32c(raw), True)
        )
        items.append((name.encode(), entry + (extra or {}).get(name, b"")))
        shard += raw
    for number, shard in enumerate(shards):
        Path(f"{prefix}.data-{number:05d}-of-{num_shards:05d}").write_bytes(bytes(shard))
    data_block = _block_with_trailer(items)
    meta_block = _block_with_trailer([])
    index_block = _block_with_trailer([(items[-1][0], _varint(0) + _varint(len(data_block) - 5))])
    meta_at, index_at = len(data_block), len(data_block) + len(meta_block)
    footer = (
        _varint(meta_at) + _varint(len(meta_block) - 5) + _varint(index_at) + _varint(len(index_block) - 5)
    )
    footer = footer.ljust(40, b"\x00") + (0xDB4775248B80FB57).to_bytes(8, "little")
    Path(f"{prefix}.index").write_bytes(data_block + meta_block + index_block + footer)


def _sample_tensors() -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "a/float32": rng.standard_normal((3, 4)).astype(np.float32),
        "a/float64": rng.standard_normal(5),
        "a/float16": rng.standard_normal((2, 2)).astype(np.float16),
        "b/int32": rng.integers(-1000, 1000, (7,)).astype(np.int32),
        "b/int64": np.array(-(2**40), dtype=np.int64),
        "b/int16": np.array([-3, 300], dtype=np.int16),
        "b/int8": np.array([-128, 127], dtype=np.int8),
        "b/uint8": np.arange(2000, dtype=np.uint8),
        "c/bool": np.array([[True, False, True]]),
        "c/empty": np.zeros((0, 4), dtype=np.float32),
        "c/big": rng.standard_normal(3000).astype(np.float32),  # > 1 KB: numpy crc lanes
    }
    return {name: (array, str(array.dtype)) for name, array in arrays.items()}


@pytest.mark.parametrize("num_shards", [1, 3])
@pytest.mark.parametrize("big_endian", [False, True])
def test_synthetic_round_trip(tmp_path: Path, num_shards: int, big_endian: bool):
    tensors = _sample_tensors()
    write_bundle(tmp_path / "model.ckpt", tensors, num_shards=num_shards, big_endian=big_endian)
    read = read_tf_checkpoint(tmp_path / "model.ckpt")
    assert sorted(read) == sorted(tensors)
    for name, (array, _) in tensors.items():
        assert read[name].dtype == array.dtype and read[name].dtype.isnative, name
        np.testing.assert_array_equal(read[name], array, err_msg=name)
    assert list_tf_variables(tmp_path) == {name: (a.shape, d) for name, (a, d) in tensors.items()}


def test_synthetic_missing_second_shard(tmp_path: Path):
    write_bundle(tmp_path / "model.ckpt", _sample_tensors(), num_shards=3)
    (tmp_path / "model.ckpt.data-00001-of-00003").unlink()
    with pytest.raises(CheckpointError, match=r"missing data shard .*model\.ckpt\.data-00001-of-00003"):
        read_tf_checkpoint(tmp_path / "model.ckpt")


def test_sliced_variable_is_rejected(tmp_path: Path):
    tensors = {"w": (np.ones((2, 2), np.float32), "float32")}
    write_bundle(tmp_path / "model.ckpt", tensors, extra={"w": _field(7, b"")})
    with pytest.raises(CheckpointError, match="tensor 'w': sliced variables are not supported"):
        list_tf_variables(tmp_path / "model.ckpt")


def test_unsupported_dtype_is_named(tmp_path: Path):
    write_bundle(tmp_path / "model.ckpt", {"vocab": (np.zeros(3, np.uint8), "string")})
    with pytest.raises(
        CheckpointError, match=r"model\.ckpt\.index: tensor 'vocab' has unsupported dtype string"
    ):
        read_tf_checkpoint(tmp_path / "model.ckpt")


def test_bfloat16_needs_ml_dtypes(tmp_path: Path, monkeypatch):
    bits = np.array([0x3F80, 0xC000], dtype=np.uint16)  # 1.0, -2.0 in bfloat16
    write_bundle(tmp_path / "model.ckpt", {"w": (bits, "bfloat16")})
    assert list_tf_variables(tmp_path / "model.ckpt") == {"w": ((2,), "bfloat16")}
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # make the import fail even if installed
    with pytest.raises(CheckpointError, match="tensor 'w' is bfloat16: install the 'ml_dtypes' package"):
        read_tf_checkpoint(tmp_path / "model.ckpt")
    monkeypatch.undo()
    pytest.importorskip("ml_dtypes")
    assert read_tf_checkpoint(tmp_path / "model.ckpt")["w"].astype(np.float32).tolist() == [1.0, -2.0]


# ------------------------------------------------------------------ crc32c
def test_crc32c_known_values():
    for crc in (*CRC_IMPLEMENTATIONS.values(), tf_checkpoint._crc32c_python):
        assert crc(b"123456789") == 0xE3069283  # the standard CRC-32C check value
        assert crc(b"") == 0
        assert crc(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4 test vector: 32 zero bytes
    assert tf_checkpoint.masked_crc32c(b"") == 0xA282EAD8  # mask(0) is the mask delta


@pytest.mark.parametrize("size", [1, 3, 4, 5, 1023, 1024, 1025, 4099, (1 << 22) + 7])
def test_crc32c_numpy_matches_table_loop(size: int):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    assert tf_checkpoint._crc32c_numpy(data) == tf_checkpoint._crc32c_python(data)
    assert tf_checkpoint._crc32c_numpy(bytearray(data)) == tf_checkpoint.crc32c(bytearray(data))
