"""Read TensorFlow V2 checkpoints (tensor bundles) without TensorFlow.

A checkpoint with prefix ``P`` (e.g. ``bert_model.ckpt``) is made of:

* ``P.index``: a LevelDB-style SSTable mapping variable name -> metadata. Its last 48 bytes are
  the footer: two block handles (metaindex, index; varint offset + varint size each), zero
  padding, and the magic 0xdb4775248b80fb57. Each block is followed by a 5-byte trailer
  (compression type byte + masked crc32c of block and type byte). A block holds entries
  ``varint shared, varint non_shared, varint value_len, key[shared:], value`` whose keys are
  prefix-compressed against the previous key, then a uint32 array of restart offsets and the
  uint32 restart count. The index block's values are handles of the data blocks.
  Key ``""`` holds a BundleHeaderProto (num_shards=1, endianness=2); every other key holds a
  BundleEntryProto (dtype=1, shape=2, shard_id=3, offset=4, size=5, crc32c=6, slices=7).
* ``P.data-0000K-of-0000N``: raw row-major tensor bytes; an entry says which shard, where and
  how many bytes, plus the masked crc32c of those bytes.

TF writes index blocks uncompressed, so snappy blocks are rejected rather than decoded.

``resolve_tf_prefix`` is the package's one answer to "which checkpoint does this path mean" (a
directory with one ``*.index``, a directory whose ``checkpoint`` state file names one of several,
a prefix, or its ``.index`` / ``.data-*`` file); ``sources.resolve_source`` routes TF paths to it.
It lives here, in the lowest layer, so the reader and the source resolution cannot disagree.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import CheckpointError

__all__ = [
    "CheckpointError",
    "is_tf_checkpoint",
    "list_tf_variables",
    "read_tf_checkpoint",
    "resolve_tf_prefix",
]


# ---------------------------------------------------------------- crc32c (Castagnoli)
def _make_crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_CRC_TABLE = _make_crc_table()
_CRC_TABLE_NP = np.array(_CRC_TABLE, dtype=np.uint32)


def _crc32c_python(data: bytes | memoryview) -> int:
    crc = 0xFFFFFFFF
    for byte in bytes(data):
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


@functools.cache
def _zero_shift_tables(nbytes: int) -> list[list[int]]:
    """Tables for the linear map 'feed nbytes zero bytes into a CRC register', one per register byte."""
    register = (
        np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4, dtype=np.uint32)[:, None])
    ).ravel()
    for _ in range(nbytes):
        register = _CRC_TABLE_NP[register & 0xFF] ^ (register >> 8)
    return [register[i * 256 : (i + 1) * 256].tolist() for i in range(4)]


def _crc32c_numpy(data: bytes | memoryview) -> int:
    """Vectorised crc32c (~100 MB/s): CRC many equal lanes at once, then chain the lanes.

    The raw CRC register (zero init) is linear, so leading zero bytes change nothing (we pad the
    front to a whole number of lanes) and crc(A + B) = shift(crc(A), len(B)) ^ crc(B). The
    standard 0xFFFFFFFF init equals inverting the first 4 message bytes.
    """
    size = len(data)
    if size < 1024:
        return _crc32c_python(data)
    # lane ~ sqrt(size), 64..1024 bytes: balances per-column numpy overhead against python chaining
    lane = 1 << min(10, max(6, size.bit_length() // 2))
    lanes = -(-size // lane)
    pad = lanes * lane - size
    buf = np.zeros(lanes * lane, dtype=np.uint8)
    buf[pad:] = np.frombuffer(data, dtype=np.uint8)
    buf[pad : pad + 4] ^= 0xFF
    columns = np.ascontiguousarray(buf.reshape(lanes, lane).T)  # row j = byte j of every lane
    crc = np.zeros(lanes, dtype=np.uint32)
    low_byte = crc.view(np.uint8)[:: crc.itemsize] if np.little_endian else crc.view(np.uint8)[3::4]
    index, looked_up = np.empty(lanes, dtype=np.uint8), np.empty(lanes, dtype=np.uint32)
    for column in columns:  # in-place ufuncs: this loop is the hot path
        np.bitwise_xor(low_byte, column, out=index)
        np.take(_CRC_TABLE_NP, index, out=looked_up)
        np.right_shift(crc, 8, out=crc)
        np.bitwise_xor(crc, looked_up, out=crc)
    t0, t1, t2, t3 = _zero_shift_tables(lane)
    total = 0
    for lane_crc in crc.tolist():
        total = (
            t0[total & 0xFF] ^ t1[(total >> 8) & 0xFF] ^ t2[(total >> 16) & 0xFF] ^ t3[total >> 24] ^ lane_crc
        )
    return total ^ 0xFFFFFFFF


def _fast_crc32c() -> Callable[[bytes | bytearray], int]:
    try:  # optional C implementation (google-crc32c); its own pure-python fallback is far too slow
        import google_crc32c
    except ImportError:
        return _crc32c_numpy
    if google_crc32c.implementation != "c":
        return _crc32c_numpy

    def crc32c_c(data: bytes | bytearray) -> int:
        return google_crc32c.value(bytes(data))  # it only takes read-only buffers

    return crc32c_c


crc32c = _fast_crc32c()


def masked_crc32c(data: bytes | memoryview) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------- wire formats
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise IndexError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _proto_fields(buf: bytes) -> dict[int, list[int | bytes]]:
    """Decode one protobuf message into field number -> values (ints, or bytes for length-delimited)."""
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, pos = _varint(buf, pos)
        elif wire_type in (1, 5):
            width = 8 if wire_type == 1 else 4
            value, pos = int.from_bytes(buf[pos : pos + width], "little"), pos + width
        elif wire_type == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        if pos > len(buf):
            raise IndexError("truncated protobuf field")
        fields.setdefault(number, []).append(value)
    return fields


def _first(fields: dict[int, list], number: int, default=0):
    return fields.get(number, [default])[-1]


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


# ---------------------------------------------------------------- SSTable (.index)
_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48


@contextlib.contextmanager
def _index_errors(path: Path) -> Iterator[None]:
    """Report malformed varints/protos/keys (IndexError, TypeError, ValueError) as a corrupt index."""
    try:
        yield
    except CheckpointError:
        raise
    except (IndexError, TypeError, ValueError) as error:
        raise CheckpointError(f"corrupt index {path}: {error}") from error


def _read_block(index: bytes, handle: bytes, path: Path) -> bytes:
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    if offset + size + 5 > len(index):
        raise CheckpointError(
            f"corrupt index {path}: block at {offset} (+{size}) runs past the end of the file"
        )
    block, compression = index[offset : offset + size], index[offset + size]
    stored = int.from_bytes(index[offset + size + 1 : offset + size + 5], "little")
    if masked_crc32c(index[offset : offset + size + 1]) != stored:
        raise CheckpointError(f"corrupt index {path}: checksum mismatch in block at offset {offset}")
    if compression == 1:
        raise CheckpointError(f"{path}: snappy-compressed index blocks are not supported")
    if compression != 0:
        raise CheckpointError(f"corrupt index {path}: unknown block compression type {compression}")
    return block


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    num_restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 - 4 * num_restarts
    if end < 0:
        raise IndexError("bad restart count")
    entries, key, pos = [], b"", 0
    while pos < end:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        if shared > len(key) or pos + non_shared + value_len > end:
            raise IndexError("entry runs past the block")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        entries.append((key, block[pos : pos + value_len]))
        pos += value_len
    return entries


def _read_index(path: Path) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of an SSTable file, in key order."""
    if not path.is_file():
        raise CheckpointError(f"missing checkpoint index file {path}")
    index = path.read_bytes()
    if len(index) < _FOOTER_SIZE or int.from_bytes(index[-8:], "little") != _TABLE_MAGIC:
        raise CheckpointError(f"{path} is not a TensorFlow checkpoint index (bad magic number)")
    with _index_errors(path):
        footer = index[-_FOOTER_SIZE:]
        _, pos = _varint(footer, 0)  # metaindex handle: TF writes no meta blocks
        _, pos = _varint(footer, pos)
        index_block = _read_block(index, footer[pos:], path)
        return [
            item
            for _, handle in _block_entries(index_block)
            for item in _block_entries(_read_block(index, handle, path))
        ]


# ---------------------------------------------------------------- bundle entries
# TF DataType enum -> numpy dtype name; bfloat16 needs the optional ml_dtypes package.
_DTYPES = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 8: "complex64", 9: "int64",
    10: "bool", 14: "bfloat16", 17: "uint16", 18: "complex128", 19: "float16", 22: "uint32", 23: "uint64",
}  # fmt: skip
_UNSUPPORTED_DTYPES = {7: "string", 11: "qint8", 12: "quint8", 13: "qint32", 15: "qint16", 16: "quint16", 20: "resource", 21: "variant"}  # fmt: skip


class _Entry:
    def __init__(self, name: str, value: bytes, index_path: Path) -> None:
        fields = _proto_fields(value)
        self.name = name
        if 7 in fields:
            raise CheckpointError(f"{index_path}: tensor {name!r}: sliced variables are not supported")
        code = _first(fields, 1)
        if code not in _DTYPES:
            label = _UNSUPPORTED_DTYPES.get(code, f"DataType {code}")
            raise CheckpointError(f"{index_path}: tensor {name!r} has unsupported dtype {label}")
        self.dtype_name = _DTYPES[code]
        shape = _proto_fields(_first(fields, 2, b""))
        self.shape = tuple(_signed64(_first(_proto_fields(dim), 1)) for dim in shape.get(2, []))
        self.shard, self.offset, self.size = (_first(fields, number) for number in (3, 4, 5))
        self.crc = _first(fields, 6)


def _numpy_dtype(entry: _Entry) -> np.dtype:
    if entry.dtype_name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError as error:
            raise CheckpointError(
                f"tensor {entry.name!r} is bfloat16: install the 'ml_dtypes' package to read it"
            ) from error
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(entry.dtype_name)


def _read_bundle(prefix: Path) -> tuple[dict, list[_Entry]]:
    index_path = Path(f"{prefix}.index")
    items = _read_index(index_path)
    if not items or items[0][0] != b"":
        raise CheckpointError(f"corrupt index {index_path}: no bundle header (empty key)")
    with _index_errors(index_path):
        header = _proto_fields(items[0][1])
        entries = []
        for key, value in items[1:]:
            if key.startswith(b"\x00"):  # TF encodes the keys of slice entries with a leading 0 byte
                raise CheckpointError(f"{index_path}: sliced variables are not supported")
            entries.append(_Entry(key.decode("utf-8"), value, index_path))
    return header, entries


# ---------------------------------------------------------------- which checkpoint: the one prefix resolver
STATE_FILE = "checkpoint"  # the text proto tf.train.Saver / CheckpointManager write beside their checkpoints
_FILE_SUFFIX = re.compile(r"\.(index|data-\d{5}-of-\d{5})$")


def is_tf_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TF checkpoint in a form ``resolve_tf_prefix`` takes (it may still be broken).

    Lets a caller that also accepts other formats route a path without catching errors.
    """
    path = Path(path)
    if path.is_dir():
        return (path / STATE_FILE).is_file() or any(path.glob("*.index"))
    return Path(f"{path}.index").is_file() or (path.is_file() and bool(_FILE_SUFFIX.search(path.name)))


def resolve_tf_prefix(path: str | os.PathLike) -> Path:
    """Checkpoint prefix from a directory, a prefix, or the path of its ``.index`` / ``.data-*`` file.

    A directory holds one checkpoint, or several and a ``checkpoint`` state file (as TF training
    writes) that names the one to use.
    """
    path = Path(path)
    if path.is_dir():
        path = _prefix_in_directory(path)
    prefix = path.with_name(_FILE_SUFFIX.sub("", path.name))
    if not Path(f"{prefix}.index").is_file():
        raise CheckpointError(f"missing checkpoint index file {prefix}.index")
    return prefix


def _prefix_in_directory(directory: Path) -> Path:
    state = directory / STATE_FILE
    if state.is_file():
        return _prefix_from_state_file(state)
    indexes = sorted(directory.glob("*.index"))
    if len(indexes) == 1:
        return indexes[0]
    found = ", ".join(p.name for p in indexes) or "none"
    advice = (
        f"; pass the prefix of the one to load (e.g. {indexes[0].with_suffix('')}), "
        f"or add a '{STATE_FILE}' state file that names it"
        if indexes
        else ""
    )
    raise CheckpointError(f"{directory}: expected exactly one *.index checkpoint file, found {found}{advice}")


def _prefix_from_state_file(state: Path) -> Path:
    """The latest checkpoint a state file names; a relative path is relative to the state file's directory."""
    match = re.search(r'^model_checkpoint_path:\s*"(.*)"', state.read_text(encoding="utf-8"), re.M)
    if not match:
        raise CheckpointError(f"{state}: no model_checkpoint_path line")
    prefix = state.parent / match.group(1)
    if not Path(f"{prefix}.index").is_file():
        raise CheckpointError(f"missing checkpoint index file {prefix}.index (named by {state})")
    return prefix


def list_tf_variables(prefix: str | Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Variable name -> (shape, dtype name), read from the ``.index`` file only."""
    _, entries = _read_bundle(resolve_tf_prefix(prefix))
    return {entry.name: (entry.shape, entry.dtype_name) for entry in entries}


def read_tf_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint by variable name, checksums verified."""
    prefix = resolve_tf_prefix(prefix)
    header, entries = _read_bundle(prefix)
    num_shards = _first(header, 1, 1)
    big_endian = _first(header, 2) == 1
    shard_paths = [Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}") for shard in range(num_shards)]
    for shard_path in shard_paths:
        if not shard_path.is_file():
            raise CheckpointError(f"missing data shard {shard_path}")
    tensors: dict[str, np.ndarray] = {}
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(shard_path.open("rb")) for shard_path in shard_paths]
        for entry in entries:
            if entry.shard >= num_shards:
                raise CheckpointError(
                    f"{prefix}.index: tensor {entry.name!r} is in shard {entry.shard} of {num_shards}"
                )
            tensors[entry.name] = _read_tensor(
                entry, files[entry.shard], shard_paths[entry.shard], big_endian
            )
    return tensors


def _read_tensor(entry: _Entry, file: BinaryIO, path: Path, big_endian: bool) -> np.ndarray:
    dtype = _numpy_dtype(entry)
    expected = int(np.prod(entry.shape, dtype=np.int64)) * dtype.itemsize
    if expected != entry.size:
        raise CheckpointError(
            f"{path}: tensor {entry.name!r} is stored as {entry.size} bytes, its shape needs {expected}"
        )
    file_size = os.fstat(file.fileno()).st_size
    if entry.offset + entry.size > file_size:
        raise CheckpointError(
            f"truncated data shard {path}: tensor {entry.name!r} needs bytes "
            f"{entry.offset}..{entry.offset + entry.size}, the file has {file_size}"
        )
    data = bytearray(entry.size)  # writable buffer, so torch.from_numpy works without copying
    file.seek(entry.offset)
    file.readinto(data)
    if masked_crc32c(data) != entry.crc:
        raise CheckpointError(f"checksum mismatch in {path}: tensor {entry.name!r} is corrupt")
    if big_endian:  # TF records the writer's byte order; hand out native arrays either way
        return np.frombuffer(data, dtype=dtype.newbyteorder(">")).astype(dtype).reshape(entry.shape)
    return np.frombuffer(data, dtype=dtype).reshape(entry.shape)
