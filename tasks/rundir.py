"""One run per directory: an advisory lock that a command holds on its run directory while it writes.

The lock is ``fcntl.flock`` on ``<run dir>/.lock``, whose text names the holder (pid, host, command,
since when). The kernel drops a flock when its process dies, however it dies (``kill -9``
included), so a lock file whose lock is free is a dead run's: it is taken over, with a note. The file
is removed when the holder releases it; an acquirer checks, once it holds the lock, that the path
still names the file it locked (else a releaser removed it in between, and it tries again).

Only the global rank 0 process locks: the other processes of a multi-process run (Lightning's
launcher starts them with LOCAL_RANK / NODE_RANK, torchrun and SLURM with RANK / SLURM_PROCID) are
the same run.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from .io import UserError, remove_stale_temps

LOCK_FILE = ".lock"

# What a run leaves in its directory: a second fit into it must not silently replace them (a lone
# config.yaml is a fit that stopped on a bad option before it trained).
RUN_FILES = ("checkpoints", "metrics.json")

_held: dict[Path, RunLock] = {}  # by resolved run directory: this process's locks


def is_global_rank_zero() -> bool:
    return all(
        os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
    )


class RunLock:
    """The lock on one run directory, held until ``release`` (or the end of the process)."""

    def __init__(self, directory: Path, fd: int, created: bool, held_nothing: bool = False):
        self.directory, self.fd, self.created = directory, fd, created
        self.held_nothing = created or held_nothing  # nothing in it was there before this command

    def release(self, failed: bool = False) -> None:
        """Unlock. A failed command leaves no trace in a directory that held nothing before it (its
        logs would make the next try look like a run), unless it got as far as a checkpoint."""
        _held.pop(self.directory.resolve(), None)
        if failed and self.held_nothing and not run_files(self.directory):
            for path in self.directory.iterdir():
                if path.name != LOCK_FILE:
                    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        try:
            os.unlink(self.directory / LOCK_FILE)  # while still holding it: see the module's docstring
        except OSError:
            pass
        os.close(self.fd)
        if self.created:
            try:
                self.directory.rmdir()  # made only to hold the lock, and nothing was written: leave no trace
            except OSError:
                pass


def lock_run_directory(directory: str | os.PathLike, command: str) -> RunLock | None:
    """Take the run directory's lock for ``command`` (creating the directory), or raise a UserError
    naming the holder. Leftover temp files of dead writers in the directory are removed. A lock this
    process holds already is kept (None is returned); so are processes of rank > 0 (None)."""
    directory = Path(directory)
    if not is_global_rank_zero() or directory.resolve() in _held:
        return None
    blocking = next((p for p in (directory, *directory.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:  # the run directory itself, or a folder above it, is a file
        raise UserError(
            f"run directory {directory}: {blocking} is a file, not a directory; choose --trainer.default_root_dir"
        )
    created = not directory.exists()
    held_nothing = created or not any(p.name != LOCK_FILE for p in directory.iterdir())
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"run directory {directory}: cannot be created ({err.strerror.lower()})") from None
    path = directory / LOCK_FILE
    for _ in range(50):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            if created:
                _remove_empty(directory)
            raise UserError(
                f"run directory {directory}: cannot be written ({err.strerror.lower()}); choose --trainer.default_root_dir"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_holder(fd)
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(f"{path}: cannot be locked ({err.strerror.lower()})") from None
            raise UserError(
                f"{directory} is in use by {_describe(holder)}; wait for it, or choose another run directory"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # released and removed between our open and our lock: try again
            os.close(fd)
            continue
        previous = _read_holder(fd)
        if previous.get("pid") is not None:
            print(
                f"note: {directory} was locked by {_describe(previous)}, which is gone; taking it over",
                file=sys.stderr,
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command,
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        lock = RunLock(directory, fd, created, held_nothing)
        _held[directory.resolve()] = lock
        folders = [directory, *(p for p in directory.iterdir() if p.is_dir() and not p.is_symlink())]
        for stale in (tmp for folder in folders for tmp in remove_stale_temps(folder)):
            print(f"note: removed {stale}, a partial file of a run that was killed", file=sys.stderr)
        return lock
    raise UserError(f"{path}: could not be locked (it keeps changing)")


def release_all(failed: bool = False) -> None:
    """Release every lock this process holds (the end of a command run in-process)."""
    for lock in list(_held.values()):
        lock.release(failed)


def run_files(directory: Path) -> list[str]:
    """The run records ``directory`` holds (none: no run there)."""
    return [name for name in RUN_FILES if (Path(directory) / name).exists()]


def busy_run_error(run_dir: Path, existing: list[str]) -> UserError:
    """A fit into a directory that holds a run: refused, saying how to go on."""
    return UserError(
        f"{run_dir} already holds a run ({', '.join(existing)}): pass --overwrite true to replace it, "
        "--ckpt_path last to resume it, or --trainer.default_root_dir DIR for a new one"
    )


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another process"
    return (
        f"{holder.get('command', '?')} (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
        f"since {holder.get('since', '?')})"
    )


def _remove_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass
