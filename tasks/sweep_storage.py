"""A sweep's Optuna storage, opened once per process from ``--storage`` (a database URL, or a journal
file shared by workers on several machines), and the pruner of ``--prune true``."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import warnings
from pathlib import Path
from typing import Any

from .io import UserError, one_line
from .sweep_workers import GRACE_S, HEARTBEAT_S

PRUNED_AT = "pruned_at"  # a trial's user attribute: {"epoch", "step"} where the pruner stopped it


_storages: dict[str, Any] = {}


def open_storage(url: str):
    """An Optuna storage for ``url`` (one per process): a database URL, or a journal file path (or
    ``journal://PATH``); a UserError when it cannot be opened."""
    if url in _storages:
        return _storages[url]
    for attempt in range(5):
        try:
            storage = _new_storage(url)
            break
        except Exception as err:  # the drivers' errors differ: any of them is a storage that does not open
            # Two workers creating one database's tables at once: the second finds them made. Retry.
            racing = type(err).__name__ == "IntegrityError" or "already exists" in str(err)
            if racing and attempt < 4:
                time.sleep(0.2 * (attempt + 1))
                continue
            raise UserError(
                f"--storage {url}: cannot be opened ({type(err).__name__}: {one_line(err)[:200]})"
            ) from None
    _storages[url] = storage
    return storage


def _new_storage(url: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "[I ...] A new study created" lines

    if "://" in url and not url.startswith("journal://"):
        sqlite = url.startswith("sqlite:///")
        # Workers starting together on one SQLite file make its tables one at a time.
        lock = (
            _file_lock(Path(url.removeprefix("sqlite:///") + ".lock")) if sqlite else contextlib.nullcontext()
        )
        with warnings.catch_warnings(), lock:
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat's
            return optuna.storages.RDBStorage(
                url,
                # Concurrent workers on one SQLite file wait for its lock instead of failing at once.
                engine_kwargs={"connect_args": {"timeout": 120}} if sqlite else None,
                heartbeat_interval=None if sqlite else HEARTBEAT_S,
                grace_period=None if sqlite else GRACE_S,
            )
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix("journal://")))


@contextlib.contextmanager
def _file_lock(path: Path):
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a directory that does not exist: the storage says so itself
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def pruner():
    """The pruner of ``--prune true``: below the median of the other trials at the same epoch."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
