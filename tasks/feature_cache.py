"""The feature cache: tokenised features written once to an Arrow file, memory-mapped after.

One path for every input: rows (read lazily from a file, or a list already in memory) are
featurised in chunks and written as they come, so no featurised split is ever held whole. The file's
name is a digest of everything the features depend on: the data, the tokenizer, the settings,
the source of the featurising code and the libraries' versions. No Lightning here.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .rundir import is_global_rank_zero

if TYPE_CHECKING:  # imported where features are written: the plain predictor never needs datasets
    import datasets

Featurize = Callable[[dict[str, list]], dict[str, list]]  # batched: columns in, columns out
Rows = Callable[[], Iterable[dict[str, Any] | None]]  # one item per example, in order
# Their versions join the key: a new tokenizers release may cut words differently.
LIBRARIES = ("tokenizers", "transformers", "datasets")
# What a featurizing function may return besides its columns: the whole length in tokens (special
# tokens included, before truncation or windowing) of each input it read. It is summed up into the
# cache's record, so a cached read reports it too, and is never written as a column.
INPUT_LENGTHS = "_input_lengths"


@dataclass(frozen=True)
class InputLengths:
    """A featurised file's inputs against ``max_seq_length``: how many were read, how many were
    longer (truncated, or split into windows), and the longest, in tokens."""

    max_seq_length: int
    inputs: int = 0
    too_long: int = 0
    longest_tokens: int = 0

    def add(self, lengths: Sequence[int]) -> InputLengths:
        too_long = self.too_long + sum(1 for length in lengths if length > self.max_seq_length)
        longest = max([self.longest_tokens, *lengths])
        return InputLengths(self.max_seq_length, self.inputs + len(lengths), too_long, longest)

    def line(self, source: str, handled: str) -> str:
        """One line for the log: ``handled`` says what became of a longer input ("were truncated")."""
        if not self.too_long:
            return (
                f"{source}: none of {self.inputs} inputs longer than max_seq_length {self.max_seq_length} "
                f"(longest {self.longest_tokens} tokens)"
            )
        return (
            f"{source}: {self.too_long} of {self.inputs} inputs longer than max_seq_length "
            f"{self.max_seq_length} {handled} (longest {self.longest_tokens} tokens)"
        )


class InputLengthReport:
    """Each featurised file's ``InputLengths``, said once per file (cached or not), and gathered by
    split for metrics.json's ``input_lengths`` section. ``handled`` says what became of a longer
    input ("were truncated", "were split into windows")."""

    def __init__(self, handled: str):
        self.handled = handled
        self.by_file: dict[str, InputLengths] = {}
        self.by_split: dict[str, dict[str, Any]] = {}

    def note(self, source: str, lengths: InputLengths) -> None:
        if source not in self.by_file and is_global_rank_zero():
            print(lengths.line(source, self.handled), file=sys.stderr)
        self.by_file[source] = lengths

    def gather(self, split: str, evaluations: Iterable[Any]) -> None:
        """The prepared split's files (an ``Evaluation`` each: MNLI validates on two)."""
        for evaluation in evaluations:
            if (lengths := self.by_file.get(evaluation.source)) is not None:
                name = split + evaluation.metric_suffix
                self.by_split[name] = {"file": evaluation.source, **asdict(lengths)}


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def examples_digest(examples: list[dict[str, Any]]) -> str:
    """SHA-256 of examples held in memory (a hub split, a file read whole)."""
    return hashlib.sha256(json.dumps(examples, sort_keys=True, default=str).encode()).hexdigest()


def code_digest(functions: Iterable[Callable]) -> str:
    """A digest of the whole source of the modules that define ``functions``: a change to any
    helper there must not reuse features cached by the old code."""
    modules = {inspect.getmodule(f) for f in functions}
    sources = sorted(inspect.getsource(module) for module in modules if module is not None)
    return hashlib.sha256("\n".join(sources).encode()).hexdigest()


@dataclass(frozen=True)
class FeatureCache:
    """The features of one data module: ``<directory>/<owner>-<split>-<digest>.arrow``.

    ``functions`` are the ``features``-module functions the owner featurises with: their modules'
    source joins the key, beside the featurising function's own module."""

    directory: str | os.PathLike | None  # None: the ``datasets`` cache
    owner: str  # the data module's class name
    tokenizer: Any
    max_seq_length: int
    functions: tuple[Callable, ...] = ()
    # Told the input lengths of each file featurised (its name, what was measured), cached or not.
    report: Callable[[str, InputLengths], None] | None = None

    def examples(
        self,
        split: str,
        examples: list[dict[str, Any]],
        fn: Featurize,
        settings: dict[str, Any],
        source: str | None = None,
    ) -> datasets.Dataset:
        """``fn`` over examples held in memory (a hub split, a file read whole), keyed by their
        digest; ``source`` names them in the input-length report."""
        if not examples:
            return _load_features(Path(), 0)
        path = self.path(split, {"examples": examples_digest(examples)}, fn, settings)
        progress = f"tokenising {split}"
        written = write_features(
            path,
            lambda: examples,
            fn,
            progress=progress,
            total=len(examples),
            max_seq_length=self.max_seq_length,
        )
        self._report(source or split, written.lengths)
        return written.dataset

    def stream(
        self,
        split: str,
        source: str | os.PathLike,
        rows: Rows,
        fn: Featurize,
        settings: dict[str, Any],
        chunk_size: int = 1000,
    ) -> tuple[datasets.Dataset, int]:
        """``fn`` over the rows of the file ``source``, read lazily, keyed by the file's bytes."""
        path = self.path(split, {"source": file_digest(source)}, fn, settings)
        written = write_features(path, rows, fn, chunk_size, max_seq_length=self.max_seq_length)
        self._report(str(source), written.lengths)
        return written.dataset, written.examples

    def _report(self, source: str, lengths: InputLengths | None) -> None:
        if self.report is not None and lengths is not None:
            self.report(source, lengths)

    def path(self, split: str, data: dict[str, str], fn: Featurize, settings: dict[str, Any]) -> Path:
        """The cache file: a digest of the data, the tokenizer, the length limit, the settings, the
        featurising code and the libraries' versions."""
        key = json.dumps(
            {
                "settings": settings,
                **data,
                # vocabulary, casing, accent stripping, Chinese-character splitting: all of the tokenizer
                "tokenizer": hashlib.sha256(self.tokenizer.backend_tokenizer.to_str().encode()).hexdigest(),
                "max_seq_length": self.max_seq_length,
                # and this module's: how features are written (a new layout must not read an old file)
                "code": code_digest((fn, *self.functions, write_features)),
                "versions": {name: importlib.metadata.version(name) for name in LIBRARIES},
            },
            sort_keys=True,
            default=str,
        )
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        import datasets

        root = Path(self.directory or Path(datasets.config.HF_DATASETS_CACHE) / "bert_tasks")
        root.mkdir(parents=True, exist_ok=True)
        return root / f"{self.owner}-{split}-{digest}.arrow"


@dataclass(frozen=True)
class Written:
    """What ``write_features`` gives back: the memory-mapped features, the number of examples, and
    the input lengths when the featurizing function measures them (``INPUT_LENGTHS``)."""

    dataset: datasets.Dataset
    examples: int
    lengths: InputLengths | None = None


def write_features(
    path: Path,
    rows: Rows,
    fn: Featurize,
    chunk_size: int = 1000,
    progress: str | None = None,
    total: int | None = None,
    max_seq_length: int = 0,
) -> Written:
    """The features in ``path``, written first when they are not there. ``rows()`` yields one
    item per example, in order: the row ``fn`` sees (its ``example`` field is set to the example's
    number), or None for an example without features (an empty line). Chunks of ``chunk_size``
    rows go through ``fn`` (a batched function that may emit several features per row) and are
    written as they come, each feature numbered by ``feature_index`` (outputs are collected by
    it). The input lengths ``fn`` measures are counted against ``max_seq_length`` and kept
    beside the features with the counts."""
    count_file = path.with_suffix(".json")
    if count_file.is_file():
        counts = json.loads(count_file.read_text())
        if not counts["features"] or path.is_file():
            measured = counts.get("input_lengths")
            lengths = InputLengths(**measured) if measured is not None else None
            return Written(_load_features(path, counts["features"]), counts["examples"], lengths)
    from datasets.arrow_writer import ArrowWriter
    from datasets.utils import tqdm

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    writer = ArrowWriter(path=str(tmp))
    num_examples = num_features = 0
    chunk: list[dict[str, Any]] = []
    lengths: InputLengths | None = None

    def flush() -> None:
        nonlocal num_features, lengths
        batch = {key: [row[key] for row in chunk] for key in chunk[0]}
        features = fn(batch)
        measured = features.pop(INPUT_LENGTHS, None)
        if measured is not None:
            lengths = (lengths or InputLengths(max_seq_length)).add(measured)
        size = len(next(iter(features.values()))) if features else 0
        if size:
            features["feature_index"] = list(range(num_features, num_features + size))
            writer.write_batch(features)
            num_features += size
        chunk.clear()

    try:
        for row in tqdm(rows(), total=total, desc=progress, unit=" examples", disable=progress is None):
            if row is not None:
                chunk.append({**row, "example": num_examples})
                if len(chunk) >= chunk_size:
                    flush()
            num_examples += 1
        if chunk:
            flush()
        if num_features:
            writer.finalize()
            os.replace(tmp, path)
        else:
            writer.stream.close()
    finally:
        if tmp.exists():
            tmp.unlink()
    # Written beside, then renamed: another process (a rank of a multi-GPU run) never reads half of it.
    count_tmp = count_file.with_name(f".{count_file.name}.{os.getpid()}.tmp")
    counts = {"examples": num_examples, "features": num_features}
    counts["input_lengths"] = asdict(lengths) if lengths is not None else None
    count_tmp.write_text(json.dumps(counts) + "\n")
    os.replace(count_tmp, count_file)
    return Written(_load_features(path, num_features), num_examples, lengths)


def _load_features(path: Path, num_features: int) -> datasets.Dataset:
    """The memory-mapped features (an empty table when there are none)."""
    import datasets

    if not num_features:
        return datasets.Dataset.from_dict({})
    return datasets.Dataset.from_file(str(path))
