"""User-facing errors and atomic file writing, shared by every task."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


class UserError(Exception):
    """A problem with the user's input or options: printed as one line, without a traceback."""


class DataError(UserError):
    """Bad input data; the message names the file, the line (or example) and the problem."""

    def __init__(
        self, path: str | os.PathLike, problem: str, line: int | None = None, example: str | None = None
    ):
        where = str(path)
        if line is not None:
            where += f":{line}"
        if example is not None:
            where += f" (example {example})"
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.example, self.problem = str(path), line, example, problem


def check_output_paths(
    paths: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike | None] = ()
) -> None:
    """A UserError, before any work, for output files that could not be written or would destroy
    something: a directory in the way, a parent that is a file or not writable, an input file, or
    two outputs on one path."""
    seen: dict[Path, Path] = {}
    protected = {Path(p).resolve() for p in inputs if p is not None}
    for raw in paths:
        path = Path(raw)
        resolved = path.resolve()
        if path.is_dir():
            raise UserError(f"{path}: is a directory; give a file path for the predictions")
        if resolved in protected:
            raise UserError(f"{path}: is the input file; predictions would overwrite it")
        if resolved in seen:
            raise UserError(
                f"{path}: two outputs would be written to this one file; choose another --data.predictions_file"
            )
        seen[resolved] = path
        ancestor = path.parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise UserError(f"{path}: cannot be created, {ancestor} is a file, not a directory")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise UserError(f"{path}: cannot be written, {ancestor} is not writable")


def open_beside(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> tuple[IO, str]:
    """A new temp file in ``path``'s directory (created if needed), and its name: write it, then
    ``commit`` it over ``path`` or delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    return os.fdopen(fd, mode, encoding=None if "b" in mode else encoding), tmp


def commit(handle: IO, tmp: str, path: str | os.PathLike) -> None:
    """Flush and close a temp file from ``open_beside`` and rename it over ``path``, with the
    permissions a plain ``open`` would give (mkstemp's are owner-only)."""
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def discard(handle: IO, tmp: str) -> None:
    handle.close()
    if os.path.exists(tmp):
        os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temp file beside ``path``; rename it over ``path`` only if the block succeeds.

    A crash or an exception leaves no partial file behind that looks complete.
    """
    handle, tmp = open_beside(path, mode, encoding)
    try:
        with handle:
            yield handle
            commit(handle, tmp, path)
    except BaseException:
        discard(handle, tmp)
        raise


def write_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> Path:
    """Write one JSON object per line, atomically."""
    with atomic_open(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write a JSON document, atomically."""
    with atomic_open(path) as handle:
        json.dump(obj, handle, ensure_ascii=False, indent=indent)
        handle.write("\n")
    return Path(path)


def read_text_lines(path: str | os.PathLike) -> list[str]:
    """Read a UTF-8 text file (a BOM is dropped) as lines without their line endings.

    A missing file or bytes that are not UTF-8 raise a DataError naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            path, f"not valid UTF-8 (byte {raw[err.start]:#04x} at offset {err.start})", line=line
        ) from None
    # Split on newlines only: str.splitlines() would also break on U+2028, U+0085 and other
    # separators that occur inside real sentences.
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def iter_text_lines(path: str | os.PathLike) -> Iterator[str]:
    """The lines of a UTF-8 text file without their line endings, one at a time: what
    ``io.read_text_lines`` returns, without reading the whole file (a BOM is dropped, lines end
    at ``\\n`` only, a trailing ``\\r`` is removed). A missing file or bytes that are not UTF-8
    raise a DataError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    offset = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                start = offset + err.start
                raise DataError(
                    path, f"not valid UTF-8 (byte {raw[err.start]:#04x} at offset {start})", line=number
                ) from None
            offset += len(raw)
            if text.endswith("\n"):
                text = text[:-1]
            yield text[:-1] if text.endswith("\r") else text
