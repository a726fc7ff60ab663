"""User-facing errors and atomic file writing, shared by every task."""

from __future__ import annotations

import argparse
import errno
import glob
import json
import os
import socket
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


class UserError(Exception):
    """A problem with the user's input or options: printed as one line, without a traceback."""


class CommandParser(argparse.ArgumentParser):
    """argparse for the small commands: a bad option is a UserError (one line, exit 2 through the
    CLI's one handler), not a usage block."""

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")


# errno values of an OSError that are the user's or the machine's business (a missing or unreadable
# file, a full disk, a read-only directory), not a bug: printed as one line naming the file.
USER_ERRNOS = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS}
USER_ERRNOS |= {errno.EEXIST, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.ENAMETOOLONG, errno.ELOOP}


def user_error_in(err: BaseException | None) -> BaseException | None:
    """The user error behind ``err`` (jsonargparse and Lightning wrap errors raised inside them), or None."""
    from bert_core.config import ConfigError
    from bert_core.errors import CheckpointError

    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, (UserError, CheckpointError, ConfigError)):
            return err
        if isinstance(err, OSError) and err.errno in USER_ERRNOS and err.filename is not None:
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def one_line(err: BaseException) -> str:
    """A user error as one line: an OSError as 'FILE: what', any other message with its lines joined."""
    if isinstance(err, OSError) and err.filename is not None:
        reason = WRITE_ERRNOS.get(err.errno) or (err.strerror or str(err)).lower()
        target = f" -> {err.filename2}" if err.filename2 else ""
        return f"{err.filename}{target}: {reason}"
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip())


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
        refuse_overwriting_inputs(path, protected)
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


def refuse_overwriting_inputs(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> None:
    """A UserError when writing ``output`` could destroy an input: the output is an input, contains
    one (a directory that would be replaced), or sits inside an input directory (symlinks resolved)."""
    target = Path(output).resolve()
    for raw in inputs:
        if raw is None:
            continue
        source = Path(raw).resolve()
        if target == source:
            raise UserError(f"{output}: is an input of this command ({raw}); writing it would destroy it")
        if target in source.parents:
            raise UserError(f"{output}: contains an input of this command ({raw}); choose another output")
        if source in target.parents and source.is_dir():
            raise UserError(f"{output}: inside the input directory {raw}; choose an output outside it")


def open_beside(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> tuple[IO, str]:
    """A new temp file in ``path``'s directory (created if needed), and its name: write it, then
    ``commit`` it over ``path`` or ``discard`` it. In the target's own directory, so that the final
    rename never crosses a filesystem (a move across one is a copy that truncates the target first).
    The name carries this process's pid and host, so that a later run can tell a dead writer's
    leftovers (``remove_stale_temps``) from a live one's."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.{os.getpid()}@{_HOST}.", suffix=TEMP_SUFFIX, dir=path.parent
        )
    except OSError as err:
        raise write_error(path, err) from None
    return os.fdopen(fd, mode, encoding=None if "b" in mode else encoding), tmp


TEMP_SUFFIX = ".tmp"
# The writer's host in temp names (its pid is taken at each open: a forked child is another writer).
_HOST = socket.gethostname().split(".")[0] or "host"


def commit(handle: IO, tmp: str, path: str | os.PathLike) -> None:
    """Flush, fsync and close a temp file from ``open_beside`` and rename it over ``path`` (then
    fsync the directory, so that the rename survives a power cut), with the permissions a plain
    ``open`` would give (mkstemp's are owner-only). A kill at any instant leaves either the old
    file or the new one; a full disk leaves the old one and raises a UserError naming ``path``."""
    try:
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as err:
        discard(handle, tmp)
        raise write_error(path, err) from None
    fsync_directory(Path(path).parent)


def fsync_directory(directory: str | os.PathLike) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a directory: the rename itself is still atomic
    finally:
        os.close(fd)


def fsync_tree(directory: str | os.PathLike) -> None:
    """fsync every file under ``directory`` and the directories themselves (before a rename that
    publishes the directory whole)."""
    for root, _, files in os.walk(directory):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_directory(root)


def discard(handle: IO, tmp: str) -> None:
    try:
        handle.close()
    except OSError:
        pass  # closing flushes: on a full disk that fails too, and the file goes anyway
    if os.path.exists(tmp):
        os.unlink(tmp)


# Failures of a write that are the machine's or the user's, not the program's: one line, exit 2.
WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only filesystem",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EFBIG: "file too large for the filesystem",
    errno.ENOTDIR: "a parent is a file, not a directory",
    errno.EISDIR: "is a directory",
}


def write_error(path: str | os.PathLike, err: OSError) -> Exception:
    """A UserError naming ``path`` for a write that failed for a reason of the machine's (full disk,
    read-only, permissions); any other OSError is returned as it is (a bug keeps its traceback)."""
    reason = WRITE_ERRNOS.get(err.errno)
    if reason is None:
        return err
    kept = "the previous file is unchanged" if Path(path).is_file() else "nothing was written"
    return UserError(f"{path}: cannot be written ({reason}); {kept}")


def remove_stale_temps(directory: str | os.PathLike, name: str = "*") -> list[Path]:
    """Remove the temp files that ``open_beside`` made in ``directory`` (for targets named ``name``)
    for a writer of this host that no longer runs: what a ``kill -9`` leaves. Returns what was removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    pattern = name if name == "*" else glob.escape(name)  # a target name may hold [ ] * ?
    for tmp in directory.glob(f".{pattern}.*@*{TEMP_SUFFIX}"):
        if tmp.is_file() and _writer_dead(tmp.name):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


def _writer_dead(temp_name: str) -> bool:
    """Whether the writer named in a temp file's name (``pid@host``) is a process of this host that
    no longer runs (another host's writer cannot be told apart: kept)."""
    for part in temp_name.split("."):
        pid, at, host = part.partition("@")
        if at and pid.isdigit() and host == _HOST:
            if int(pid) == os.getpid():
                return False
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
            return False
    return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temp file beside ``path``; rename it over ``path`` only if the block succeeds.

    A crash or an exception leaves no partial file behind that looks complete, and the previous
    file (if any) in place; a full disk or a read-only directory is a UserError naming ``path``.
    """
    handle, tmp = open_beside(path, mode, encoding)
    try:
        with handle:
            yield handle
            commit(handle, tmp, path)
    except OSError as err:
        discard(handle, tmp)
        raise write_error(path, err) from None
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
