"""Process tuning (malloc, oneDNN's cache) and the filter of framework noise: set once per command."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
import warnings


def keep_freed_memory() -> None:
    """Let glibc's malloc keep large freed blocks for reuse instead of handing them back to the OS.

    By default a block over 32 MiB is mmap'ed fresh and unmapped when freed, so each training step's
    dense gradient of the word-embedding table (30,522 x H floats: 47 MB at H=384) is page-faulted in
    again: about 60 ms of a 770 ms all-MiniLM-L6-v2 step on this project's CPU. Kept in the heap,
    the step takes 660 ms (freed blocks stay in the process: its RSS does not shrink back during
    the fit). Other C libraries: nothing to do."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 512 << 20)  # blocks up to 512 MiB come from the heap
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)  # and the heap keeps up to 1 GiB of free space
    except (OSError, AttributeError):
        pass


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def drop_onednn_primitive_cache() -> None:
    """validate/test/predict: oneDNN keeps no compiled matmul primitives (unless the user set
    ONEDNN_PRIMITIVE_CACHE_CAPACITY). Token-budget batches come in many shapes and each shape's
    primitive stays cached with its buffers: on this project's CPU that held about 170 MB of a
    predict's peak RSS (SST-2, 5,000 sentences: 930 MB -> 760 MB; MRPC, 3,668 pairs: 975 -> 805 MB)
    at the same speed. Set before torch is imported, so that oneDNN reads it."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")


# Lightning's messages that say nothing to a user of this app (it sets these things itself).
_NOISE = (
    r".*does not have many workers.*",
    r".*The number of training batches .* is smaller than the logging interval.*",
    r".*dirpath has changed from.*",
    r".*Experiment logs directory .* exists and is not empty.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r"LightningCLI's args parameter is intended.*",
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
    # Evaluation outputs are gathered by example, so the sampler's padding repeats count once.
    r".*Using `DistributedSampler` with the dataloaders.*",
    r".*It is recommended to use `self.log\(.*sync_dist=True.*",
    # Evaluation and predict batches come from TokenBudgetBatchSampler, which never drops an index
    # (and the PredictionWriter refuses to finish with an example missing).
    r".*You are using a custom batch sampler .* for prediction.*",
    # The sampler resumes mid-epoch itself (tasks.callbacks.ResumableRun), without Lightning's loader state.
    r".*You're resuming from a checkpoint that ended before the epoch ended.*",
    # A config without seed_everything (predict from a checkpoint): seed 0, as documented.
    r"No seed found, seed set to",
)


# Lightning's log lines that concern its own set-up, not the user's run.
_NOISE_LINES = (
    "Tip:",
    "litlogger",
    "litmodels",
    "TPU available",
    "HPU available",
    "will override existing callbacks passed to Trainer",
    "to estimate number of stepping batches",
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage().lower()
        return not any(noise.lower() in message for noise in _NOISE_LINES)


def quiet_lightning() -> None:
    if getattr(quiet_lightning, "done", False):
        return
    quiet_lightning.done = True
    for pattern in _NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    warnings.formatwarning = one_line_warning
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropNoise())


def one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ARG001
    """A warning as the app's notes look: one line, without the file, line number and source line
    that Python prints (they name our code or Lightning's, never the user's input)."""
    kind = "" if issubclass(category, UserWarning) else f"{category.__name__}: "
    return f"warning: {kind}{message}\n"


# -- processes that end with their parent -------------------------------------------------------

PR_SET_PDEATHSIG = 1  # prctl's option (linux/prctl.h)
ORPHAN_POLL_S = 0.5  # how often the portable fallback looks at the parent's pid
ORPHAN_GRACE_S = 3.0  # how long an orphan's own SIGTERM handling may take before it is cut short
_forker = [0]  # the pid that is forking, read by the child (see forks_exit_with_parent)


def exit_with_parent(parent: int) -> None:
    """End this process soon after ``parent`` (its parent's pid) ends, even by SIGKILL, which runs
    none of the parent's clean-up. On Linux the kernel sends SIGTERM at once (PR_SET_PDEATHSIG;
    note that it fires when the parent *thread* that started this process ends: start children
    from a thread that lives as long as the parent, its main thread). Everywhere, a daemon thread
    polls the parent's pid, which changes once this process is orphaned: it sends the SIGTERM where
    the kernel did not, and ends the process ORPHAN_GRACE_S later if the SIGTERM has not (a server
    draining requests that the dead parent would have answered)."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            armed = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0
        except (OSError, AttributeError):
            pass
    armed = armed and os.getppid() == parent  # a parent gone before prctl took effect sends nothing
    watch = threading.Thread(target=_watch_parent, args=(parent, armed), name="exit-with-parent", daemon=True)
    watch.start()


def _watch_parent(parent: int, armed: bool) -> None:
    while os.getppid() == parent:
        time.sleep(ORPHAN_POLL_S)
    if not armed:
        os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(ORPHAN_GRACE_S)
    os._exit(1)


def forks_exit_with_parent() -> None:
    """Every process this one forks from now on (multiprocessing's fork context included), and
    every process those fork, calls ``exit_with_parent`` as it starts. Not processes started with
    exec (subprocess, multiprocessing's spawn context): they call it themselves."""
    if _forker[0] == 0:
        os.register_at_fork(before=_note_forker, after_in_child=lambda: exit_with_parent(_forker[0]))
        _note_forker()


def _note_forker() -> None:
    _forker[0] = os.getpid()
