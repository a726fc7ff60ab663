"""Array files written as a stream: ``.npy`` and ``.safetensors`` whose sizes are known only at the end.

Both formats put the shapes in a header before the data. The writer reserves a fixed-size header,
streams the rows after it, and when the last row is in, writes the real header into the reserved
space (both formats allow padding the header with spaces), so no array is ever held whole.
"""

from __future__ import annotations

import json
import struct
from typing import IO

import numpy as np

NPY_HEADER_BYTES = 128  # magic (6) + version (2) + length (2) + a dict padded with spaces to 118
SAFETENSORS_HEADER_BYTES = 1024


def npy_header(rows: int, dim: int) -> bytes:
    """The header of a float32, C-order ``[rows, dim]`` ``.npy`` file (format 1.0), 128 bytes."""
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
    length = NPY_HEADER_BYTES - 10
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", length) + text.ljust(length - 1).encode("latin1") + b"\n"


class NpyRows:
    """A float32 ``[rows, dim]`` ``.npy`` written row by row: ``header()`` first, ``encode(vector)``
    for each row, then ``finish(handle)`` writes the real shape over the placeholder."""

    def __init__(self) -> None:
        self.count, self.dim = 0, None

    def header(self) -> list[bytes]:
        self.count, self.dim = 0, None
        return [npy_header(0, 0)]

    def encode(self, vector: np.ndarray) -> bytes:
        vector = np.asarray(vector, dtype="<f4").reshape(-1)
        if self.dim is None:
            self.dim = len(vector)
        elif len(vector) != self.dim:
            raise ValueError(f"row {self.count} has {len(vector)} values, the others {self.dim}")
        self.count += 1
        return vector.tobytes()

    def finish(self, handle: IO[bytes]) -> None:
        handle.seek(0)
        handle.write(npy_header(self.count, self.dim or 0))
        handle.seek(0, 2)


class SafetensorsRagged:
    """Per-line matrices in one ``.safetensors`` file: ``vectors`` float32 ``[total, dim]`` (the rows
    of every line, in order) and ``offsets`` int64 ``[lines + 1]`` (line i is
    ``vectors[offsets[i]:offsets[i + 1]]``)."""

    def __init__(self) -> None:
        self.offsets, self.dim = [0], None

    def header(self) -> list[bytes]:
        self.offsets, self.dim = [0], None
        return [b" " * SAFETENSORS_HEADER_BYTES + b" " * 8]

    def encode(self, matrix: np.ndarray) -> bytes:
        matrix = np.asarray(matrix, dtype="<f4")
        if matrix.ndim != 2:
            raise ValueError(f"expected a [words, dim] matrix, got shape {matrix.shape}")
        if self.dim is None and len(matrix):
            self.dim = matrix.shape[1]
        self.offsets.append(self.offsets[-1] + len(matrix))
        return matrix.tobytes()

    def finish(self, handle: IO[bytes]) -> None:
        dim = self.dim or 0
        vector_bytes = self.offsets[-1] * dim * 4
        offsets = np.asarray(self.offsets, dtype="<i8")
        handle.seek(0, 2)
        handle.write(offsets.tobytes())
        header = {
            "vectors": {"dtype": "F32", "shape": [self.offsets[-1], dim], "data_offsets": [0, vector_bytes]},
            "offsets": {
                "dtype": "I64",
                "shape": [len(offsets)],
                "data_offsets": [vector_bytes, vector_bytes + offsets.nbytes],
            },
        }
        text = json.dumps(header, separators=(",", ":")).encode()
        if len(text) > SAFETENSORS_HEADER_BYTES:
            raise ValueError("safetensors header larger than the space reserved for it")
        handle.seek(0)
        handle.write(struct.pack("<Q", SAFETENSORS_HEADER_BYTES) + text.ljust(SAFETENSORS_HEADER_BYTES))
        handle.seek(0, 2)
