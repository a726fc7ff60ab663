"""The one interface between a data module and its module for the splits that are evaluated or predicted.

The data module owns files, gold data and output formats; the module owns the model and decoding.
For each split the data module builds an ``Evaluation``: how many model outputs (windows, rows)
make each example whole, the gold data, what decoding needs besides the outputs, and how
predictions are written. ``TaskModule`` drives it in one place: it collects outputs by example
(``Collector``), decodes each example once all of its outputs are in, scores, and hands finished
predictions to the prediction writer in example order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

Context = TypeVar("Context")


@dataclass
class OutputFile:
    """A prediction file, written line by line as examples are decoded (temp file, then rename).

    ``render(example, prediction)`` gives the lines of one example; ``header`` comes first and
    ``footer()`` last, once every example has been rendered. A ``binary`` file takes bytes
    (``render``, ``header`` and ``footer`` give chunks written as they are, without newlines), and
    ``finish(handle)`` may then complete it in place, e.g. write a header whose sizes are known
    only at the end (``.npy``, ``.safetensors``)."""

    path: Path
    render: Callable[[int, Any], Iterable[Any]]
    header: Sequence[Any] | Callable[[], Sequence[Any]] = ()  # a callable is called as writing starts
    footer: Callable[[], Iterable[Any]] | None = None
    binary: bool = False
    finish: Callable[[Any], None] | None = None


@dataclass
class Evaluation(Generic[Context]):
    """One split as the module sees it.

    Attributes:
        split: "train", "validation", "test" or "predict".
        source: the file (or hub data set) it was read from, for messages.
        windows: per example, how many model outputs make it whole (0: nothing to run, e.g. an
            empty line; it is decoded from no outputs).
        gold: per example, the reference the task's scorer compares with (None when unlabelled).
        context: what decoding needs besides the outputs (task-specific: windows' offsets, lengths).
        metric_suffix: appended to metric names (MNLI's mismatched dev set: ``_mm``).
        outputs: the prediction files of ``predict``.
        write_artifacts: after validate/test, writes evaluation files (e.g. SQuAD's
            predictions.json) from the decoded predictions into the run directory.
    """

    split: str
    source: str
    windows: Sequence[int]
    gold: Sequence[Any] | None = None
    context: Context | None = None
    metric_suffix: str = ""
    outputs: Sequence[OutputFile] = ()
    write_artifacts: Callable[[dict[int, Any], Path], list[Path]] | None = None

    @property
    def num_examples(self) -> int:
        return len(self.windows)


@dataclass
class Collector:
    """Model outputs by example and feature; hands out examples whose outputs are all in.

    Outputs are keyed by feature index, so one seen twice (a distributed sampler pads its last
    batch with repeats) counts once.
    """

    windows: Sequence[int]
    parts: dict[int, dict[int, Any]] = field(default_factory=dict)
    next_example: int = 0  # the first example not yet handed out by ``ready``

    def add(self, outputs: Iterable[tuple[int, int, Any]]) -> None:
        """``outputs``: (example index, feature index, output) per feature."""
        for example, feature, output in outputs:
            self.parts.setdefault(example, {})[feature] = output

    def is_complete(self, example: int) -> bool:
        return len(self.parts.get(example, ())) == self.windows[example]

    def ready(self) -> Iterator[tuple[int, list[Any]]]:
        """The complete examples that follow the ones already handed out, in example order."""
        while self.next_example < len(self.windows) and self.is_complete(self.next_example):
            yield self.next_example, self._pop(self.next_example)
            self.next_example += 1

    def complete(self) -> Iterator[tuple[int, list[Any]]]:
        """Every complete example, in example order (an evaluation cut short skips the others)."""
        for example in range(len(self.windows)):
            if self.is_complete(example):
                yield example, self._pop(example)

    @property
    def pending(self) -> int:
        """Examples not handed out by ``ready``."""
        return len(self.windows) - self.next_example

    def items(self) -> list[tuple[int, int, Any]]:
        return [
            (example, feature, output)
            for example, parts in self.parts.items()
            for feature, output in parts.items()
        ]

    def _pop(self, example: int) -> list[Any]:
        parts = self.parts.pop(example, {})
        return [parts[feature] for feature in sorted(parts)]


def coverage_note(
    evaluation: Evaluation, evaluated: int, noun: str, limit_name: str, limit: int | float | None
) -> str:
    """The one line that says an evaluation scored only part of its split, and why when a limit
    says: "note: validation data/dev.json: 128 of 1,589 questions evaluated
    (--trainer.limit_val_batches 2): the scores cover those only"."""
    # a whole number counts batches, a float below 1.0 is a share of them (1.0: all, no limit)
    limited = limit is not None and (isinstance(limit, int) or limit < 1.0)
    why = f" (--trainer.{limit_name} {limit})" if limited else ""
    covered = "the scores cover those only" if evaluated else "no scores"
    return (
        f"note: {evaluation.split} {evaluation.source}: {evaluated:,} of {evaluation.num_examples:,} "
        f"{noun} evaluated{why}: {covered}"
    )
