"""The prediction files of one predict, written as examples are decoded: temp files beside the
targets, renamed over them once every example is in (``commit``), removed otherwise (``discard``),
so that a file that exists is complete. No Lightning: the Lightning writer (``tasks.writers``) and
the plain predict (``tasks.plain_predict``) both write through it."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from .evaluation import OutputFile
from .io import commit, discard, open_beside, remove_stale_temps


class RecordFiles:
    def __init__(self, outputs: Sequence[OutputFile]) -> None:
        self.outputs = list(outputs)
        self._open: list[tuple[OutputFile, IO, str]] = []

    def start(self) -> None:
        """Temp files opened beside the targets, headers written (a killed run's leftovers removed)."""
        self.discard()
        for output in self.outputs:
            for stale in remove_stale_temps(Path(output.path).parent, Path(output.path).name):
                print(
                    f"note: removed {stale}, the partial file of a predict that was killed", file=sys.stderr
                )
            handle, tmp = open_beside(output.path, "wb" if output.binary else "w")
            _write(handle, output, output.header() if callable(output.header) else output.header)
            self._open.append((output, handle, tmp))

    def write(self, predictions: Iterable[tuple[int, Any]]) -> None:
        """(example index, prediction) pairs, in example order, rendered into every file."""
        predictions = list(predictions)
        for output, handle, _ in self._open:
            for example, value in predictions:
                _write(handle, output, output.render(example, value))

    def commit(self) -> None:
        """Footers written, files completed and renamed over their targets."""
        for output, handle, tmp in self._open:
            if output.footer is not None:
                _write(handle, output, output.footer())
            if output.finish is not None:
                output.finish(handle)
            commit(handle, tmp, output.path)
        self._open = []

    def discard(self) -> None:
        for _, handle, tmp in self._open:
            discard(handle, tmp)
        self._open = []


def _write(handle: IO, output: OutputFile, chunks) -> None:
    if output.binary:
        handle.writelines(chunks)
    else:
        handle.writelines(line + "\n" for line in chunks)
