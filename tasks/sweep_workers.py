"""A sweep's workers: each holds a lock file in ``<sweep dir>/workers/`` for its life, so that a
trial left RUNNING by a worker that died (``kill -9`` included: the kernel drops a flock with its
process) is seen as dead and run again; on database storages, Optuna's heartbeat as well, for workers
on machines that share no files."""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import time
from pathlib import Path

WORKERS = "workers"  # <sweep dir>/workers/<host>-<pid>-<start>.lock: a live worker holds its file's flock
HEARTBEAT_S, GRACE_S = 60, 180  # Optuna's heartbeat on database storages


class WorkerLock:
    """This worker's lock file, held (flock) for its life: free means the worker is gone."""

    def __init__(self, sweep_dir: Path):
        folder = sweep_dir / WORKERS
        folder.mkdir(parents=True, exist_ok=True)
        # pid and start time: a later process given a dead worker's pid is another worker
        self.name = f"{WORKERS}/{socket.gethostname()}-{os.getpid()}-{time.time_ns()}.lock"
        self.path = sweep_dir / self.name
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)


def worker_is_dead(sweep_dir: Path, name: str | None) -> bool:
    """Whether the worker that holds (held) ``workers/<host>-<pid>-<start>.lock`` is gone: its lock is free,
    or, on this host, its file is gone. A worker whose file this machine cannot see is not judged."""
    if not name:
        return False
    path = sweep_dir / name
    if not path.exists():
        return Path(name).name.rsplit("-", 2)[0] == socket.gethostname()
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # held: alive
    finally:
        os.close(fd)
    try:
        os.unlink(path)
    except OSError:
        pass
    return True


class Heartbeat:
    """Optuna's heartbeat for a trial run with ask/tell (a database storage with heartbeats only)."""

    def __init__(self, study, trial):
        storage = study._storage
        self._stop = threading.Event()
        interval = getattr(storage, "get_heartbeat_interval", lambda: None)()  # RDBStorage's
        if interval:
            storage.record_heartbeat(trial._trial_id)

            def beat() -> None:
                while not self._stop.wait(interval):
                    storage.record_heartbeat(trial._trial_id)

            threading.Thread(target=beat, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
